"""The module as a process: simulator over real sockets, real mosquitto, EVerest side over MQTT."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.everest import validation
from lem_dcbm.harness import (
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from tests.support.everest_peer import EverestPeer

pytestmark = pytest.mark.integration

REQUEST: dict[str, Any] = {
    "evse_id": "DE*LEM*E0001",
    "transaction_id": "2b1c6f0e-5a7d-4f1e-9d2a-0c3b4a5d6e7f",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": ["RFID_PLAIN"],
    "identification_data": "04A2B3C4D5E6F7",
}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


@contextmanager
def run_module(
    tmp_path: Path, sim: Simulator, broker: Broker, **overrides: Any
) -> Iterator[ModuleProcess]:
    """The module against ``sim``; it must exit 0 on SIGTERM at the end."""
    config = write_config(tmp_path / "config.yaml", simulator_config(sim, **overrides))
    module = start_module(tmp_path, config, broker.port)
    try:
        yield module
    finally:
        assert module.terminate() == 0, module.log()


def transaction_round_trip(peer: EverestPeer, sim: Simulator) -> None:
    """Five valid publications, a start, energy, a stop whose record verifies."""
    samples = peer.wait_for_var("powermeter", 5, timeout=20)
    for sample in samples[:5]:
        assert validation.check_var("powermeter", sample.value) is None, sample.value
    key = peer.wait_for_var("public_key_ocmf", 1)[0].value

    sim.set_load(power_kw=60.0, voltage_v=400.0)
    started = peer.call("start_transaction", {"value": REQUEST}, timeout=15)
    retval = started["retval"]
    assert retval["status"] == "OK", retval
    assert validation.check_result("start_transaction", retval) is None
    window = parse_time(retval["transaction_max_stop_time"]) - parse_time(
        retval["transaction_min_stop_time"]
    )
    # The latest stop is a minute before the time sync made right before the start
    # expires: 48 h - 3 min, less the moments between that sync and the answer.
    assert timedelta(hours=48, minutes=-3, seconds=-5) <= window <= timedelta(hours=48, minutes=-3)

    before = len(peer.vars("powermeter"))
    peer.wait_for_var("powermeter", before + 2, timeout=10)
    stopped = peer.call("stop_transaction", {"transaction_id": REQUEST["transaction_id"]}, 15)
    retval = stopped["retval"]
    assert retval["status"] == "OK", retval
    assert validation.check_result("stop_transaction", retval) is None
    value = retval["signed_meter_value"]
    assert value["encoding_method"] == "OCMF"
    assert value["public_key"] == key
    record = value["signed_meter_data"]
    assert verify_ocmf(record, key)
    readings = parse_ocmf(record).payload["RD"]
    imports = [r["RV"] for r in readings if r.get("RI") == "1-0:1.8.0"]
    assert [r.get("TX") for r in readings if "TX" in r] == ["B", "E"]
    assert imports[1] > imports[0]


def test_transaction_over_http(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    with run_module(tmp_path, simulator, mosquitto):
        transaction_round_trip(peer, simulator)


def test_transaction_over_tls(
    tmp_path: Path, tls_simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    with run_module(tmp_path, tls_simulator, mosquitto):
        transaction_round_trip(peer, tls_simulator)
        assert tls_simulator.state()["connections"]["accepted"] <= 2


def test_boot_time_stops_are_answered(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    with run_module(tmp_path, simulator, mosquitto):
        peer.wait_for_var("powermeter", 1, timeout=20)
        remembered = peer.call("stop_transaction", {"transaction_id": "tx-before-reboot"})
        assert remembered["retval"]["status"] == "UNEXPECTED_ERROR"
        dangling = peer.call("stop_transaction", {"transaction_id": ""})
        assert dangling["retval"] == {
            "status": "UNEXPECTED_ERROR",
            "error": "no transaction running",
        }


def test_oversized_transaction_id_is_refused_before_the_meter(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    with run_module(tmp_path, simulator, mosquitto):
        peer.wait_for_var("powermeter", 1, timeout=20)
        answer = peer.call("start_transaction", {"value": {**REQUEST, "transaction_id": "x" * 38}})
        assert answer["retval"]["status"] == "UNEXPECTED_ERROR"
        assert "38 bytes" in answer["retval"]["error"]
        counts = simulator.state()["requests"]
        assert not any(key.startswith("POST") for key in counts), counts
        good = peer.call("start_transaction", {"value": REQUEST})
        assert good["retval"]["status"] == "OK"


def test_a_refused_call_is_answered_while_a_slow_start_is_at_the_meter(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    with run_module(tmp_path, simulator, mosquitto, command_timeout_ms=8000):
        peer.wait_for_var("powermeter", 1, timeout=20)
        simulator.set_faults(
            latency_ms=4000, paths=["/v1/legal", "/v2/legal"], methods=["POST"], count=1
        )
        start = peer.call_async("start_transaction", {"value": REQUEST})
        wait_until(lambda: simulator.state()["faults_applied"] == 1, 10, what="the slow start")
        stop = peer.call_async("stop_transaction", {"transaction_id": REQUEST["transaction_id"]})
        refused = peer.call("stop_transaction", {"transaction_id": 17}, timeout=2)
        assert refused["error"]["__everest__error_type"] == "SchemaValidationError"
        with pytest.raises(AssertionError):
            peer.result(start, 0)  # the start is still at the meter
        # The stop sent during the start waits for it, then ends that very transaction.
        assert peer.result(start, 15)["retval"]["status"] == "OK"
        stopped = peer.result(stop, 15)["retval"]
        assert stopped["status"] == "OK", stopped
        assert simulator.state()["running_transaction"] is None
