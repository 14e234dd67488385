"""The simulated meter reaches the limits of the LEM manual (7.2 to 7.8), on a manual clock."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.simulator.cli import build_parser
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner
from lem_dcbm.simulator.refusals import ConditionError, NotFound
from lem_dcbm.simulator.ring import LOOKUP_WINDOW, RING_CAPACITY

SIGNER = OcmfSigner.generate()
BILLABLE = 17


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc))


def make(clock: ManualClock, **config: Any) -> SimulatedMeter:
    config.setdefault("min_transaction_seconds", 0.0)
    return SimulatedMeter(clock, SIGNER, MeterConfig(**config))


def body(transaction_id: str) -> dict[str, Any]:
    return {
        "evseId": "DE*LEM*E1",
        "transactionId": transaction_id,
        "clientId": "card",
        "tariffId": 0,
        "cableId": 1,
        "userData": "",
    }


def run(
    meter: SimulatedMeter, clock: ManualClock, transaction_id: str, seconds: float = 1.0
) -> int:
    meter.start_transaction(body(transaction_id), "v1")
    clock.advance(seconds)
    report = meter.stop_transaction(transaction_id, {"running": False})
    return int(report["meterValue"]["transactionStatus"])


def pagination(record: str) -> str:
    return str(json.loads(record.split("|")[1])["PG"])


def test_the_manual_limits_are_the_defaults() -> None:
    config = MeterConfig()
    assert (config.storage_capacity, config.ocmf_search_window) == (20_399, 840)
    assert config.logbook_capacity == 40_000
    assert config.time_sync_validity_seconds == 48 * 3600
    assert config.settings_window_seconds == 120
    assert (RING_CAPACITY, LOOKUP_WINDOW) == (20_399, 840)


def test_a_full_ring_overwrites_its_oldest_record(clock: ManualClock) -> None:
    meter = make(clock, ring_filled=RING_CAPACITY)
    status = meter.status()
    assert status["numberOfStoredTransactions"] == RING_CAPACITY
    assert status["indexOfLastTransaction"] == RING_CAPACITY - 1
    assert pagination(meter.ocmf_at(0)) == "T1"
    run(meter, clock, "new")
    status = meter.status()
    assert (status["indexOfLastTransaction"], status["numberOfStoredTransactions"]) == (
        0,
        RING_CAPACITY,
    )
    assert pagination(meter.ocmf_at(0)) == f"T{RING_CAPACITY + 1}"
    assert pagination(meter.ocmf_at(1)) == "T2"
    assert [t["transactionId"] for t in meter.state()["transactions"]] == ["new"]
    assert meter.state()["ring"]["next_index"] == 1


def test_lookup_by_id_searches_only_the_window_while_the_index_reaches_all(
    clock: ManualClock,
) -> None:
    meter = make(clock, ocmf_search_window=3, storage_capacity=10)
    for n in range(5):
        run(meter, clock, f"tx-{n}")
    assert pagination(meter.ocmf("tx-2")) == "T3"
    with pytest.raises(NotFound, match="among the last 3"):
        meter.ocmf("tx-1")
    assert pagination(meter.ocmf_at(1)) == "T2"


def test_the_prefilled_history_is_searched_like_any_transaction(clock: ManualClock) -> None:
    meter = make(clock, ring_filled=50_000)
    latest = meter.ocmf()
    assert pagination(latest) == "T50000"
    assert pagination(meter.ocmf("history-49500")) == "T49500"
    with pytest.raises(NotFound):
        meter.ocmf("history-49000")


def test_a_full_logbook_stays_full_and_refuses_every_start(clock: ManualClock) -> None:
    meter = make(clock, logbook_capacity=10, logbook_filled=8)
    run(meter, clock, "fits")  # start and stop: the last two events
    errors = meter.status()["errors"]["bits"]
    assert errors["logbookIsFull"] is True
    assert meter.status()["status"]["bits"]["muFatalErrorOccured"] is True
    with pytest.raises(ConditionError):
        meter.start_transaction(body("refused"), "v1")
    meter.reboot()
    assert meter.status()["errors"]["bits"]["logbookIsFull"] is True
    assert meter.logbook()["count"] == 10


def test_a_sync_about_to_expire_invalidates_the_running_transaction(clock: ManualClock) -> None:
    meter = make(clock, sync_expires_in_seconds=600)
    assert run(meter, clock, "in-time", seconds=300) == BILLABLE
    meter.start_transaction(body("too-long"), "v1")
    clock.advance(600)
    # No sync during a transaction: the write is refused, the expiry stands.
    assert meter.put_settings({"time": {"utc": "2026-07-01T10:15:00Z"}})["result"] == 0
    report = meter.stop_transaction("too-long", {"running": False})
    assert report["meterValue"]["transactionStatus"] != BILLABLE
    with pytest.raises(ConditionError):
        meter.start_transaction(body("after-expiry"), "v1")


def test_a_start_aborts_a_running_ntp_sync(clock: ManualClock) -> None:
    meter = make(clock, synced=False, ntp_answer_seconds=30)
    meter.put_settings({"ntp": {"ntpActivated": True}})
    clock.advance(10)
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is False
    with pytest.raises(ConditionError):
        meter.start_transaction(body("early"), "v1")
    clock.advance(20)
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is True


def test_a_start_during_an_ntp_sync_of_a_synced_meter_aborts_it(clock: ManualClock) -> None:
    meter = make(clock, ntp_answer_seconds=30)
    meter.put_settings({"ntp": {"ntpActivated": True}})
    meter.start_transaction(body("tx"), "v1")
    assert [e["event"] for e in meter.logbook()["entries"]][-2:] == [
        "ntpSyncAborted",
        "transactionStart",
    ]


def test_settings_written_in_the_first_two_minutes_may_be_lost(clock: ManualClock) -> None:
    meter = make(clock, synced=False)
    meter.put_settings({"time": {"utc": "2026-07-01T10:00:00Z"}})
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is True
    meter.reboot()
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is False


def test_the_command_line_starts_at_the_limits() -> None:
    args = build_parser().parse_args(
        [
            "--ring-filled",
            "20399",
            "--logbook-filled",
            "39990",
            "--sync-expires-in-seconds",
            "60",
            "--lookup-window",
            "5",
            "--ntp-answer-seconds",
            "30",
        ]
    )
    assert args.ring_filled == 20_399
    assert args.logbook_filled == 39_990
    assert args.sync_expires_in_seconds == 60
    assert args.lookup_window == 5
    assert args.ntp_answer_seconds == 30


def test_a_year_of_settings_writes_keeps_the_simulator_small(clock: ManualClock) -> None:
    meter = make(clock)
    for _ in range(3 * 10_000 // 10):
        meter.put_settings({"time": {"tz": "+01:00"}})
        clock.advance(1)
    writes = meter.state()["settings_writes"]
    assert len(writes) == 1000
    assert writes[-1]["since_power_on_s"] == 3 * 10_000 // 10 - 1
