"""Parity features as a process: health bits, temperatures, v1/v2, IT, clock and NTP, start value.

Each test runs the module against the simulator over real sockets, with a real mosquitto
and the EVerest side played by ``EverestPeer``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import (
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    start_simulator,
    wait_until,
    write_config,
)
from lem_dcbm.meter.models import ERROR_BITS
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from tests.support.everest_peer import EverestPeer

pytestmark = pytest.mark.integration

REQUEST: dict[str, Any] = {
    "evse_id": "DE*LEM*E0001",
    "transaction_id": "5d0c3a7e-1f2b-4c6d-8e9f-a1b2c3d4e5f6",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": ["RFID_PLAIN"],
    "identification_data": "04A2B3C4D5E6F7",
}
#: Quick cycles so that waits are short: publish every 200 ms, read the status each cycle.
FAST: dict[str, Any] = {"publish_interval_ms": 200}
ErrorKey = tuple[str, str]


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


def run_module(
    workdir: Path,
    sim: Simulator,
    broker: Broker,
    *,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> ModuleProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    # The C++ module's behaviour raises every warning: the EVerest release that tolerates them.
    overrides.setdefault("error_profile", "everest-2026.02")
    config = write_config(workdir / "config.yaml", simulator_config(sim, **overrides))
    return start_module(workdir, config, broker.port, env=env)


def error_key(data: dict[str, Any]) -> ErrorKey:
    """``("VendorError", "logbookIsFull")`` from a raise or clear."""
    return data["type"].split("/", 1)[1], data["sub_type"]


def counts(peer: EverestPeer) -> tuple[Counter[ErrorKey], Counter[ErrorKey]]:
    """How often each error was raised and cleared so far."""
    raised = Counter(error_key(d) for d in peer.errors_raised)
    cleared = Counter(error_key(d) for d in peer.errors_cleared)
    return raised, cleared


def is_active(peer: EverestPeer, key: ErrorKey) -> bool:
    raised, cleared = counts(peer)
    return raised[key] > cleared[key]


def active_errors(peer: EverestPeer) -> set[ErrorKey]:
    raised, cleared = counts(peer)
    return {key for key in raised if raised[key] > cleared[key]}


def wait_for_readings(peer: EverestPeer, more: int, timeout: float = 10.0) -> None:
    """Wait for ``more`` further ``powermeter`` publications."""
    peer.wait_for_var("powermeter", len(peer.vars("powermeter")) + more, timeout)


def wait_for_temperature(peer: EverestPeer, celsius: float, timeout: float = 10.0) -> None:
    """Wait until a publication carries ``celsius`` as the hotter sensor's temperature."""

    def seen() -> bool:
        samples = peer.vars("powermeter")
        return bool(samples) and samples[-1].value["temperatures"][0]["temperature"] == celsius

    wait_until(seen, timeout, what=f"a reading of {celsius} degC")


def start(peer: EverestPeer, request: dict[str, Any] | None = None) -> dict[str, Any]:
    retval: dict[str, Any] = peer.call("start_transaction", {"value": request or REQUEST}, 15)[
        "retval"
    ]
    return retval


def stop(peer: EverestPeer, transaction_id: str = REQUEST["transaction_id"]) -> dict[str, Any]:
    retval: dict[str, Any] = peer.call("stop_transaction", {"transaction_id": transaction_id}, 15)[
        "retval"
    ]
    return retval


def wait_initialised(module: ModuleProcess) -> None:
    """Wait until the module has finished its init with the meter."""
    wait_until(lambda: "ready: firmware" in module.log(), 20, what="init")


def settings_writes(sim: Simulator, section: str) -> list[dict[str, Any]]:
    """Every ``PUT /v1/settings`` the simulator received that touched ``section``."""
    return [w for w in sim.state()["settings_writes"] if section in w["body"]]


# --- meter health ------------------------------------------------------------------

#: (where, bit, bad value, expected error) in walking order.
HEALTH_STEPS: list[tuple[str, str, bool, str]] = [
    ("status", "suLinkStatusIsOk", False, "VendorError"),
    ("status", "muFatalErrorOccured", True, "VendorError"),
    ("status", "timeSyncStatusIsOk", False, "VendorError"),
    ("status", "tamperingIsDetected", True, "VendorError"),
    ("status", "overTemperatureIsDetected", True, "VendorWarning"),
    ("status", "reversedVoltage", True, "VendorWarning"),
    ("status", "suMeasureFailureOccurred", True, "VendorWarning"),
] + [("errors", bit, True, "VendorError") for bit in ERROR_BITS]
FATAL: ErrorKey = ("VendorError", "muFatalErrorOccured")


def wait_for_active(peer: EverestPeer, expected: set[ErrorKey]) -> None:
    """Wait until exactly ``expected`` is raised (the meter's own failures are fatal too)."""
    peer.wait_for(lambda: active_errors(peer) == expected, 5, f"exactly {expected} active")


def test_each_health_bit_raises_and_clears_its_error_once(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(
        tmp_path / "module", simulator, mosquitto, status_poll_interval_ms=100, **FAST
    )
    try:
        peer.wait_for_var("powermeter", 2, timeout=20)
        wait_for_readings(peer, 2)
        assert peer.errors_raised == []
        previous: tuple[str, str] | None = None
        # One bit at a time: set the next one and release the previous one together.
        for where, bit, bad, error in HEALTH_STEPS:
            changes: dict[str, dict[str, bool | None]] = {"status": {}, "errors": {}}
            changes[where][bit] = bad
            if previous is not None:
                changes[previous[0]][previous[1]] = None
            simulator.set_bits(**changes)  # type: ignore[arg-type]
            expected = {(error, bit)} | ({FATAL} if where == "errors" else set())
            wait_for_active(peer, expected)
            previous = (where, bit)
        assert previous is not None
        simulator.set_bits(**{previous[0]: {previous[1]: None}})  # type: ignore[arg-type]
        wait_for_active(peer, set())
        raised, cleared = counts(peer)
        expected_counts = Counter({(error, bit): 1 for _, bit, _, error in HEALTH_STEPS})
        expected_counts[FATAL] = 2  # once on its own, once throughout the error bits
        assert raised == expected_counts
        assert cleared == expected_counts
        messages = {d["sub_type"]: d["message"] for d in peer.errors_raised}
        assert messages["logbookIsFull"].startswith("logbookIsFull is true")
        assert messages["suLinkStatusIsOk"].startswith("suLinkStatusIsOk is false")
    finally:
        assert module.terminate() == 0, module.log()


def test_default_profile_logs_warnings_that_would_stop_charging(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    """EVerest main stops charging on powermeter/VendorWarning: the default only logs it."""
    module = run_module(
        tmp_path / "module",
        simulator,
        mosquitto,
        status_poll_interval_ms=100,
        error_profile="everest-main",
        **FAST,
    )
    try:
        peer.wait_for_var("powermeter", 2, timeout=20)
        simulator.set_bits(status={"overTemperatureIsDetected": True, "suLinkStatusIsOk": False})
        # The blocking bit still reaches EVerest; the indicator beside it only the log.
        wait_for_active(peer, {("VendorError", "suLinkStatusIsOk")})
        wait_until(
            lambda: "not raised as VendorWarning" in module.log(), 10, what="the logged warning"
        )
        assert not [d for d in peer.errors_raised if d["type"].endswith("/VendorWarning")]
    finally:
        assert module.terminate() == 0, module.log()


# --- temperatures ------------------------------------------------------------------

WARN: ErrorKey = ("VendorWarning", "TemperatureWarning")
ERROR: ErrorKey = ("VendorError", "TemperatureError")


def test_temperature_levels_raise_and_clear_once_and_ignore_short_spikes(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(
        tmp_path / "module",
        simulator,
        mosquitto,
        temperature_warning_level_C=40,
        temperature_error_level_C=50,
        temperature_hysteresis_K=3,
        temperature_min_time_as_valid_ms=1000,
        **FAST,
    )
    try:
        peer.wait_for_var("powermeter", 2, timeout=20)
        # A spike far above both levels, seen for well under the minimum time.
        simulator.set_load(temperature_c=90.0)
        wait_for_temperature(peer, 90.0)
        simulator.set_load(temperature_c=25.0)
        wait_for_temperature(peer, 25.0)
        # A raise follows the publication of its reading: two more readings are enough.
        wait_for_readings(peer, 2)
        assert peer.errors_raised == []

        simulator.set_load(temperature_c=45.0)
        wait_for_temperature(peer, 45.0)
        simulator.set_load(temperature_c=55.0)
        peer.wait_for(lambda: active_errors(peer) == {WARN, ERROR}, 5, "warning and error")
        # Below the error level, but not by the hysteresis: both stay.
        simulator.set_load(temperature_c=48.0)
        wait_for_temperature(peer, 48.0)
        wait_for_readings(peer, 2)
        assert active_errors(peer) == {WARN, ERROR}
        simulator.set_load(temperature_c=46.0)
        peer.wait_for(lambda: active_errors(peer) == {WARN}, 5, "the error cleared")
        simulator.set_load(temperature_c=36.0)
        peer.wait_for(lambda: not active_errors(peer), 5, "the warning cleared")
        wait_for_readings(peer, 2)
        raised, cleared = counts(peer)
        assert raised == Counter({WARN: 1, ERROR: 1})
        assert cleared == Counter({WARN: 1, ERROR: 1})
    finally:
        assert module.terminate() == 0, module.log()


# --- API generation, start body, begin record ----------------------------------------


def assert_begin_record(retval: dict[str, Any], key: str) -> dict[str, Any]:
    """The start answer carries a verified record with a begin and no end reading."""
    assert retval["status"] == "OK", retval
    value = retval["signed_meter_value"]
    assert value["encoding_method"] == "OCMF"
    assert value["public_key"] == key
    record = value["signed_meter_data"]
    assert verify_ocmf(record, key)
    payload: dict[str, Any] = parse_ocmf(record).payload
    marks = [r.get("TX") for r in payload["RD"]]
    assert "B" in marks
    assert "E" not in marks
    return payload


@pytest.mark.parametrize(
    ("api", "firmware"),
    [("v2", "MU-1.0.0.0"), ("v1", "MU-9.9.9.9")],
    ids=["v2-with-an-old-looking-version", "v1-with-a-new-looking-version"],
)
def test_api_generation_is_asked_not_guessed(
    tmp_path: Path, mosquitto: Broker, peer: EverestPeer, api: str, firmware: str
) -> None:
    sim = start_simulator(tmp_path / "sim", api=api, firmware=firmware)
    module = run_module(tmp_path / "module", sim, mosquitto, **FAST)
    try:
        peer.wait_for_var("powermeter", 3, timeout=20)
        key = peer.wait_for_var("public_key_ocmf", 1)[0].value
        requests = sim.state()["requests"]
        if api == "v2":
            assert requests["GET /v2/livemeasure"] >= 3
            assert "GET /v1/livemeasure" not in requests
        else:
            assert requests["GET /v2/livemeasure"] == 1  # the question, answered 404
            assert requests["GET /v1/livemeasure"] >= 3
        assert_begin_record(start(peer), key)
        requests = sim.state()["requests"]
        assert requests[f"POST /{api}/legal"] == 1
        assert f"API {api}" in module.log()
    finally:
        assert module.terminate() == 0, module.log()
        sim.stop()


def test_v2_start_body_carries_tt_uv_ud_sc(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(
        tmp_path / "module", simulator, mosquitto, UV="2.1.0", UD="depot 7", SC=3, **FAST
    )
    try:
        peer.wait_for_var("powermeter", 1, timeout=20)
        key = peer.wait_for_var("public_key_ocmf", 1)[0].value
        payload = assert_begin_record(start(peer, {**REQUEST, "tariff_text": "0.39 EUR/kWh"}), key)
        assert payload["TT"] == "0.39 EUR/kWh"
        sent = simulator.state()["transactions"][-1]
        assert sent["api"] == "v2"
        assert {k: sent["request"][k] for k in ("TT", "UV", "UD", "SC")} == {
            "TT": "0.39 EUR/kWh",
            "UV": "2.1.0",
            "UD": "depot 7",
            "SC": 3,
        }
    finally:
        assert module.terminate() == 0, module.log()


def test_start_answers_a_begin_record_that_verifies(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path / "module", simulator, mosquitto, **FAST)
    try:
        key = peer.wait_for_var("public_key_ocmf", 1, timeout=20)[0].value
        payload = assert_begin_record(start(peer), key)
        assert payload["RD"][0]["TX"] == "B"
        assert stop(peer)["status"] == "OK"
    finally:
        assert module.terminate() == 0, module.log()


# --- OCMF identification type -----------------------------------------------------


def test_identification_type_written_once_when_it_differs(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    assert simulator.state()["settings"]["ocmfId"]["IT"] == 0
    for run in range(2):
        module = run_module(tmp_path / f"module-{run}", simulator, mosquitto, IT=5, **FAST)
        try:
            wait_initialised(module)
        finally:
            assert module.terminate() == 0, module.log()
    writes = settings_writes(simulator, "ocmfId")
    assert [w["body"] for w in writes] == [{"ocmfId": {"IT": 5}}]
    assert simulator.state()["settings"]["ocmfId"]["IT"] == 5
    assert simulator.state()["requests"]["GET /v1/settings"] == 2  # each run read it


def test_identification_type_left_alone_when_equal_or_unset(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    for run, it in enumerate((0, -1)):
        module = run_module(tmp_path / f"module-{run}", simulator, mosquitto, IT=it, **FAST)
        try:
            wait_initialised(module)
        finally:
            assert module.terminate() == 0, module.log()
    assert settings_writes(simulator, "ocmfId") == []
    assert simulator.state()["requests"]["GET /v1/settings"] == 1  # -1 does not even ask


# --- clock and NTP ------------------------------------------------------------------

DST = {
    "activated": True,
    "offset": 60,
    "start": {"order": "last", "day": "sunday", "month": "march", "hour": "T01:00Z"},
    "end": {"order": "last", "day": "sunday", "month": "october", "hour": "T01:00Z"},
}


def test_ntp_settings_land_exactly_as_configured(
    tmp_path: Path, mosquitto: Broker, peer: EverestPeer
) -> None:
    sim = start_simulator(tmp_path / "sim", extra_args=["--settings-window-seconds", "1"])
    # Let the meter's settings window pass, so that what the module writes persists.
    wait_until(lambda: not sim.state()["settings_window_open"], 5, what="the settings window")
    module = run_module(
        tmp_path / "module",
        sim,
        mosquitto,
        ntp_server_1_ip_addr="192.0.2.10",
        ntp_server_1_port=123,
        ntp_server_2_ip_addr="192.0.2.11",
        ntp_server_2_port=1123,
        meter_timezone="+01:00",
        meter_dst=json.dumps(DST),
        **FAST,
    )
    expected_ntp = {
        "servers": [
            {"ipAddress": "192.0.2.10", "port": 123},
            {"ipAddress": "192.0.2.11", "port": 1123},
        ],
        "syncPeriod": 120,
        "ntpActivated": True,
    }
    try:
        peer.wait_for_var("powermeter", 2, timeout=20)
        assert start(peer)["status"] == "OK"
        assert stop(peer)["status"] == "OK"
        state = sim.state()
        writes = [w for w in state["settings_writes"] if w["accepted"]]
        assert writes, state["settings_writes"]
        bodies = [w["body"] for w in writes]
        assert {"ntp": expected_ntp} in bodies
        assert all(b == {"ntp": expected_ntp} for b in bodies if "ntp" in b)
        assert not any("utc" in b.get("time", {}) for b in bodies)  # NTP keeps the time
        assert state["persisted_settings"]["ntp"] == expected_ntp
        assert state["persisted_settings"]["time"] == {"tz": "+01:00", "dst": DST}
        assert state["time_sync"] == {**state["time_sync"], "ntp": True, "valid": True}
    finally:
        assert module.terminate() == 0, module.log()
        sim.stop()


def meter_time(sim: Simulator) -> datetime:
    """The meter's clock as ``/v1/status`` reports it."""
    status = sim.control("GET", "/v1/status")
    return datetime.fromisoformat(status["time"])


def test_meter_clock_a_year_behind_is_fixed_by_the_next_start(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    # The host clock is the right one here: said by configuration, since this host's
    # kernel clock may not be synchronised. Without that word the meter's valid clock
    # is kept (tests/integration/test_host_clock.py).
    module = run_module(
        tmp_path / "module", simulator, mosquitto, host_clock_trust="always", **FAST
    )
    try:
        peer.wait_for_var("powermeter", 1, timeout=20)
        simulator.control("PUT", "/_sim/clock", {"offset_s": -31536000})
        behind = datetime.now(timezone.utc) - meter_time(simulator)
        assert behind.total_seconds() > 364 * 24 * 3600
        assert start(peer)["status"] == "OK"
        off = datetime.now(timezone.utc) - meter_time(simulator)
        assert abs(off.total_seconds()) < 60
    finally:
        assert module.terminate() == 0, module.log()


def test_failed_clock_write_with_valid_time_sync_still_starts(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path / "module", simulator, mosquitto, **FAST)
    try:
        peer.wait_for_var("powermeter", 1, timeout=20)
        # The simulator matches faults by path, not method: every settings write fails.
        simulator.set_faults(http_status=500, paths=["/v1/settings"])
        assert start(peer)["status"] == "OK"
        assert simulator.state()["faults_applied"] >= 1
        assert "clock sync before start failed, time sync still valid" in module.log()
        assert stop(peer)["status"] == "OK"
        # Time sync invalid and the writes still failing: refused, saying why.
        simulator.set_bits(status={"timeSyncStatusIsOk": False})
        refused = start(peer, {**REQUEST, "transaction_id": "second"})
        assert refused["status"] == "UNEXPECTED_ERROR"
        assert "time sync is invalid" in refused["error"]
        assert simulator.state()["requests"]["POST /v2/legal"] == 1
    finally:
        assert module.terminate() == 0, module.log()


# --- non-billable transactions ---------------------------------------------------------


def test_non_billable_stop_returns_the_record_and_warns(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path / "module", simulator, mosquitto, **FAST)
    try:
        key = peer.wait_for_var("public_key_ocmf", 1, timeout=20)[0].value
        assert start(peer)["status"] == "OK"
        # Tampering seen during the transaction marks it, even once the bit is gone.
        simulator.set_bits(status={"tamperingIsDetected": True})
        simulator.set_bits(status={"tamperingIsDetected": None})  # type: ignore[dict-item]
        retval = stop(peer)
        assert retval["status"] == "OK", retval
        record = retval["signed_meter_value"]["signed_meter_data"]
        assert verify_ocmf(record, key)
        report = simulator.state()["transactions"][-1]
        assert report["transactionStatus"] != 17
        not_billable = ("VendorWarning", "TransactionNotBillable")
        peer.wait_for(lambda: is_active(peer, not_billable), 5, "TransactionNotBillable")
        assert f"status {report['transactionStatus']}" in module.log()
        assert "not billable" in module.log()
    finally:
        assert module.terminate() == 0, module.log()
