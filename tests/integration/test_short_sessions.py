"""A session shorter than the meter's minimum duration keeps its bill.

Real mosquitto, the simulator over HTTP refusing stops within its minimum (scaled from
the meter's 120 s to 4 s) and the module as a process told the same minimum. The stop
arrives about a sixth into the minimum, as a car leaving after 20 s does against the
real meter's 2 minutes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    start_simulator,
    write_config,
)
from lem_dcbm.harness import (
    transaction_request as request,
)
from lem_dcbm.ocmf import verify_ocmf
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# Long enough that a stop sent right after its start's answer reaches the meter within the
# minimum even on a loaded machine; each session here waits for all of it.
MINIMUM_S = 3.0
# The record's ride on the powermeter var is counted in publications, not seconds.
PUBLISH_INTERVAL_MS = 250


@pytest.fixture
def short_simulator(tmp_path: Path) -> Iterator[Simulator]:
    with start_simulator(tmp_path / "simulator", min_transaction_seconds=MINIMUM_S) as sim:
        yield sim


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        started.subscribe("lem_dcbm/#")
        yield started


def run_module(
    tmp_path: Path, simulator: Simulator, broker: Broker, **overrides: Any
) -> ModuleProcess:
    values = simulator_config(
        simulator,
        journal_dir=str(tmp_path / "journal"),
        meter_min_transaction_ms=int(MINIMUM_S * 1000),
        **overrides,
    )
    return start_module(tmp_path, write_config(tmp_path / "config.yaml", values), broker.port)


def start(peer: EverestPeer) -> tuple[str, str, float]:
    transaction_id = str(uuid.uuid4())
    answer = peer.call("start_transaction", {"value": request(transaction_id)}, timeout=15)
    assert answer["retval"]["status"] == "OK", answer
    return transaction_id, str(peer.vars("public_key_ocmf")[-1].value), time.monotonic()


def stop(peer: EverestPeer, transaction_id: str) -> dict[str, Any]:
    answer = peer.call("stop_transaction", {"transaction_id": transaction_id}, timeout=30)
    retval: dict[str, Any] = answer["retval"]
    return retval


def stopped_too_early(peer: EverestPeer, transaction_id: str, key: str) -> str:
    """Stop within the minimum, too early to wait: the verified record from the late road."""
    retval = stop(peer, transaction_id)
    assert retval["status"] == "UNEXPECTED_ERROR", retval
    topic = f"lem_dcbm/{MODULE_ID}/records/{transaction_id}"
    assert topic in retval["error"], retval
    [published] = peer.wait_for(lambda: peer.on_topic(topic), 30, "the late record")
    record: str = published.json()["signed_meter_value"]["signed_meter_data"]
    assert verify_ocmf(record, key)
    return record


def test_a_short_session_ends_with_a_verified_stop_record(
    tmp_path: Path, short_simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path, short_simulator, mosquitto)
    try:
        peer.wait_for_var("public_key_ocmf", 1, timeout=20)
        transaction_id, key, started = start(peer)
        retval = stop(peer, transaction_id)
        answered = time.monotonic()
        assert retval["status"] == "OK", f"{retval}\n{module.log()[-3000:]}"
        record = retval["signed_meter_value"]["signed_meter_data"]
        assert verify_ocmf(record, key)
        assert '"TX":"E"' in record
        assert answered - started >= MINIMUM_S
        at_meter = short_simulator.state()
        assert at_meter["running_transaction"] is None
        assert at_meter["requests"].get("PUT /v2/legal", 0) >= 2  # refused, then stopped
        assert "within the meter's minimum transaction duration" in module.log()
        # The charger goes on: the next session starts and ends the same way.
        second, key, _ = start(peer)
        assert stop(peer, second)["status"] == "OK"
        assert peer.on_topic_prefix(f"lem_dcbm/{MODULE_ID}/records/") == []
    finally:
        assert module.terminate() == 0, module.log()[-3000:]


def riding(peer: EverestPeer, since: int = 0) -> list[str | None]:
    """The record each powermeter publication from index ``since`` on carries (or None)."""
    carried: list[str | None] = []
    for sample in peer.vars("powermeter")[since:]:
        value = sample.value if isinstance(sample.value, dict) else {}
        signed = value.get("signed_meter_value")
        carried.append(signed["signed_meter_data"] if isinstance(signed, dict) else None)
    return carried


def test_a_stop_too_early_to_wait_sends_its_record_late_and_on_the_powermeter_var(
    tmp_path: Path, short_simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    # OCPP 2.0.1 sends no TransactionEvent with this record; libocpp's clock-aligned
    # MeterValues of an idle EVSE carry the powermeter var's signed_meter_value instead.
    module = run_module(
        tmp_path,
        short_simulator,
        mosquitto,
        stop_minimum_wait_ms=1000,
        publish_interval_ms=PUBLISH_INTERVAL_MS,
    )
    try:
        peer.wait_for_var("public_key_ocmf", 1, timeout=20)
        transaction_id, key, _ = start(peer)
        during = len(peer.vars("powermeter"))
        record = stopped_too_early(peer, transaction_id, key)
        assert '"TX":"E"' in record
        assert short_simulator.state()["running_transaction"] is None
        first = peer.wait_for(
            lambda: next((i for i, r in enumerate(riding(peer)) if r), None),
            15,
            "a powermeter publication carrying the record",
        )
        assert riding(peer)[first] == record
        # Nothing rode before the record was fetched, and only this record rides.
        assert not any(riding(peer, during)[: first - during])
        peer.wait_for(lambda: len(riding(peer, first)) >= 3, 10, "three more publications")
        assert set(riding(peer, first)) == {record}
        # The next transaction's publications never carry it.
        start(peer)
        after_start = len(peer.vars("powermeter"))
        peer.wait_for(lambda: len(riding(peer, after_start)) >= 2, 10, "two publications")
        assert riding(peer, after_start) == [None] * len(riding(peer, after_start))
        powermeter = [s.value for s in peer.vars("powermeter")[after_start:]]
        assert all("signed_meter_value" not in v for v in powermeter if isinstance(v, dict))
    finally:
        assert module.terminate() == 0, module.log()[-3000:]
