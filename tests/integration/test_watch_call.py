"""``lem-dcbm watch`` and ``call`` where an integrator gets them wrong, against real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lem_dcbm import harness
from lem_dcbm.harness import MODULE_ID, Broker, Simulator, run_to_exit, wait_until
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

TOOL = [sys.executable, "-m", "lem_dcbm"]


def _broker_args(broker: Broker) -> list[str]:
    return ["--broker-host", broker.host, "--broker-port", str(broker.port)]


def test_watch_with_a_wrong_module_id_gives_up_and_names_what_it_watched(
    mosquitto: Broker,
) -> None:
    argv = [*TOOL, "watch", "--module-id", "powermeter", "--timeout", "1"]
    try:
        done = subprocess.run(
            [*argv, *_broker_args(mosquitto)], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("watch waited for ever for a module id that publishes nothing")
    assert done.returncode == 3
    line = done.stderr.strip()
    assert line.count("\n") == 0, line
    assert "no value from module powermeter within 1 s" in line
    assert "(watched everest/modules/powermeter/impl/main/var/powermeter)" in line


def test_a_call_that_timed_out_does_not_run_when_the_module_comes_back(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> None:
    """The module's persistent session would deliver the call late: the call expires first."""
    config = harness.write_config(tmp_path / "config.yaml", harness.simulator_config(simulator))
    with (
        TcpProxy(mosquitto.host, mosquitto.port) as link,
        harness.start_module(tmp_path, config, link.port) as module,
    ):
        module.wait_ready()
        link.cut()
        wait_until(
            lambda: "disconnected from the MQTT broker" in module.log(),
            5,
            what="the module to notice the cut",
        )
        start = [*TOOL, "call", "start_transaction", "--module-id", MODULE_ID]
        start += ["--transaction-id", "late-tx"]
        called_at = time.monotonic()
        timed_out = run_to_exit([*start, "--timeout", "1", *_broker_args(mosquitto)])
        assert timed_out[0] == 3, timed_out[1]
        # The cut outlasting the call's expiry is the scenario itself, not a wait.
        time.sleep(max(0.0, called_at + 2.5 - time.monotonic()))
        connects = module.log().count("connected to the MQTT broker at")
        link.restore()
        wait_until(
            lambda: module.log().count("connected to the MQTT broker at") > connects,
            15,
            what="the module to reconnect",
        )
        # Calls are carried out one at a time, in order: once this one is answered, a
        # late start would have been carried out before it.
        stop = [*TOOL, "call", "stop_transaction", "--module-id", MODULE_ID]
        stop += ["--transaction-id", "probe"]
        code, said = run_to_exit([*stop, "--timeout", "10", *_broker_args(mosquitto)])
        assert code == 1, said  # answered: no transaction called probe
        assert simulator.state()["running_transaction"] is None
        assert "late-tx" not in module.log()
        # ... and the tool said so when it gave up.
        assert "the call expired in the broker after 1 s" in timed_out[1]
