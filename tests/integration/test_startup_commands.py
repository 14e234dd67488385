"""A stop kept in the broker across a restart waits for the meter, then is carried out.

Real mosquitto, the simulator over HTTP and the module as a process, in both protocols.
The module is stopped mid-transaction, the stop is published while it is away (the broker
keeps it for the module's persistent session), and the meter then resets every
connection for a few seconds after the module comes back: the stop arrives before the
meter is set up, waits for it and ends with the verified record.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.everest_api.topics import ApiTopics
from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.harness import transaction_request as request
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.tools.api_client import ApiClient
from tests.integration.test_everest_api import MODULE as API_MODULE
from tests.integration.test_everest_api import bridge  # noqa: F401 - the bridge's heartbeat
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EXTERNAL_PREFIX = "ext/"
UNREACHABLE_MS = 4000


def run(
    tmp_path: Path, sim: Simulator, broker: Broker, *, api: bool, **overrides: Any
) -> ModuleProcess:
    module_id = API_MODULE if api else MODULE_ID
    values = simulator_config(sim, journal_dir=str(tmp_path / "journal"), **overrides)
    config = write_config(tmp_path / "config.yaml", values, module_id=module_id)
    extra = ["--everest-api", "--module-id", API_MODULE] if api else []
    env = {"EV_MQTT_EXTERNAL_PREFIX": EXTERNAL_PREFIX} if api else {}
    return start_module(
        tmp_path, config, broker.port, extra_args=extra, env=env, module_id=module_id
    )


def meter_unreachable_for_a_while(sim: Simulator) -> None:
    """Every meter request resets its connection for ``UNREACHABLE_MS``."""
    sim.set_faults(reset_connection=True, for_ms=UNREACHABLE_MS)


def assert_waited_then_carried_out(module: ModuleProcess, transaction_id: str) -> None:
    log = module.log()
    assert f"stop_transaction of '{transaction_id}' arrived while the module is starting" in log
    assert f"carrying out stop_transaction of '{transaction_id}'" in log
    assert "still starting; no meter yet" not in log


def test_module_protocol_stop_kept_across_a_restart_waits_for_the_meter(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> None:
    with EverestPeer(mosquitto.host, mosquitto.port) as peer:
        module = run(tmp_path, simulator, mosquitto, api=False)
        try:
            peer.wait_for_var("public_key_ocmf", 1, timeout=20)
            key = str(peer.vars("public_key_ocmf")[-1].value)
            transaction_id = str(uuid.uuid4())
            started = peer.call("start_transaction", {"value": request(transaction_id)}, 15)
            assert started["retval"]["status"] == "OK", started
        finally:
            assert module.terminate() == 0, module.log_tail(40)
        call_id = peer.call_async("stop_transaction", {"transaction_id": transaction_id})
        meter_unreachable_for_a_while(simulator)
        module = run(tmp_path, simulator, mosquitto, api=False)
        try:
            result = peer.result(call_id, timeout=40)
            retval = result["retval"]
            assert retval["status"] == "OK", f"{retval}\n{module.log_tail(60)}"
            assert verify_ocmf(retval["signed_meter_value"]["signed_meter_data"], key)
            assert simulator.state()["running_transaction"] is None
            assert_waited_then_carried_out(module, transaction_id)
        finally:
            assert module.terminate() == 0, module.log_tail(40)


def test_api_mode_stop_kept_across_a_restart_waits_for_the_meter(
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: Broker,
    bridge: ApiClient,  # noqa: F811 - the fixture imported above
) -> None:
    topics = ApiTopics(API_MODULE, EXTERNAL_PREFIX)
    with EverestPeer(mosquitto.host, mosquitto.port, module_id=API_MODULE) as peer:
        peer.subscribe(f"{EXTERNAL_PREFIX}#")
        module = run(tmp_path, simulator, mosquitto, api=True)
        try:
            [key_message] = peer.wait_for(
                lambda: peer.on_topic(topics.m2e("public_key_ocmf"))[:1], 20, "the key"
            )
            key = key_message.json()
            transaction_id = str(uuid.uuid4())
            topic = bridge.send("start_transaction", request(transaction_id))
            [started] = peer.wait_for(lambda: peer.on_topic(topic), 20, "the start's reply")
            assert started.json()["status"] == "OK", started.json()
        finally:
            assert module.terminate() == 0, module.log_tail(40)
        reply_topic = bridge.send("stop_transaction", {"transaction_id": transaction_id})
        meter_unreachable_for_a_while(simulator)
        module = run(tmp_path, simulator, mosquitto, api=True)
        try:
            [stopped] = peer.wait_for(lambda: peer.on_topic(reply_topic), 40, "the stop's reply")
            answer = stopped.json()
            assert answer["status"] == "OK", f"{answer}\n{module.log_tail(60)}"
            assert verify_ocmf(answer["signed_meter_value"]["signed_meter_data"], key)
            assert simulator.state()["running_transaction"] is None
            assert_waited_then_carried_out(module, transaction_id)
        finally:
            assert module.terminate() == 0, module.log_tail(40)


def test_a_command_that_cannot_wait_long_enough_is_refused_with_a_log_line(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> None:
    with EverestPeer(mosquitto.host, mosquitto.port) as peer:
        simulator.set_faults(reset_connection=True)
        module = run(tmp_path, simulator, mosquitto, api=False, startup_command_wait_ms=1000)
        try:
            wait_until(lambda: "module powermeter_1 running" in module.log(), 20)
            result = peer.call("stop_transaction", {"transaction_id": "early-1"}, 20)
            retval = result["retval"]
            assert retval["status"] == "UNEXPECTED_ERROR", retval
            assert "not set up within 1 s" in retval["error"]
            assert "stop_transaction of 'early-1' refused: the meter was not set up" in module.log()
        finally:
            simulator.clear_faults()
            assert module.terminate() == 0, module.log_tail(40)
