"""Records survive restarts, are verified, and missing ones are fetched in the background."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.errors import MeterStatusError
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.ocmf import verify_ocmf
from tests.support.fake_meter import PUBLIC_KEY, FakeMeter, unreachable

REQUEST: dict[str, Any] = {
    "evse_id": "DE*PNX*E1",
    "transaction_id": "tx-1",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": [],
}


@dataclass
class RecordingAlerts:
    active: dict[str, str] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)

    def warn(self, sub_type: str, message: str) -> None:
        self.active[sub_type] = message
        self.history.append(("warn", sub_type))

    def clear(self, sub_type: str) -> None:
        if self.active.pop(sub_type, None) is not None:
            self.history.append(("clear", sub_type))


def controller(
    meter: FakeMeter, journal_dir: Path | None = None, alerts: RecordingAlerts | None = None
) -> tuple[MeterController, ManualClock]:
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    journal = TransactionJournal(journal_dir) if journal_dir else None
    made = MeterController(
        meter,
        ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0), transaction_retries=1),
        clock,
        TimeSync(meter, clock, timezone="+00:00", dst={}),
        records=RecordBook(journal),
        alerts=alerts,
    )
    made.initialize()
    return made, clock


def test_record_returned_after_restart_from_journal(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path)
    first.start_transaction(transaction_request(REQUEST))
    record = first.stop_transaction("tx-1").record.ocmf
    # A new process; the meter has meanwhile moved on and forgets nothing we need.
    meter.ended.clear()
    second, _ = controller(meter, tmp_path)
    answer = second.stop_transaction("tx-1")
    assert answer.record.ocmf == record
    assert verify_ocmf(record, PUBLIC_KEY)


def test_restart_resumes_running_transaction(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path)
    first.start_transaction(transaction_request(REQUEST))
    second, _ = controller(meter, tmp_path)  # crash and restart; still running at the meter
    assert second.stop_transaction("tx-1").ok
    entry = TransactionJournal(tmp_path).get("tx-1")
    assert entry is not None
    assert entry.stopped
    assert entry.has_record


def test_transaction_stopped_while_away_gets_its_record_in_background(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path)
    first.start_transaction(transaction_request(REQUEST))
    meter.stop_transaction("tx-1")  # stopped at the meter while the module was down
    meter.calls.clear()
    second, _ = controller(meter, tmp_path)
    assert second.pending_records == ["tx-1"]
    second.housekeeping()
    assert second.pending_records == []
    entry = TransactionJournal(tmp_path).get("tx-1")
    assert entry is not None
    assert entry.ocmf is not None


def test_missing_record_fetched_with_backoff(tmp_path: Path) -> None:
    meter = FakeMeter()
    made, clock = controller(meter, tmp_path)
    made.start_transaction(transaction_request(REQUEST))
    busy = MeterStatusError("GET", "/v1/ocmf", 500, "busy")
    meter.fail["ocmf"] = [busy] * 40
    first = made.stop_transaction("tx-1")
    assert not first.ok
    assert "fetched in the background" in first.error
    assert made.pending_records == ["tx-1"]
    left = len(meter.fail["ocmf"])
    assert left > 0
    made.housekeeping()  # not due yet
    assert len(meter.fail["ocmf"]) == left
    clock.advance(2.0)
    made.housekeeping()  # due: fails, backs off to 4 s
    assert len(meter.fail["ocmf"]) == left - 1
    clock.advance(3.0)
    made.housekeeping()  # not due
    assert len(meter.fail["ocmf"]) == left - 1
    clock.advance(1.0)
    made.housekeeping()  # due: fails again, backs off to 8 s
    assert made.pending_records == ["tx-1"]
    meter.fail["ocmf"] = []
    clock.advance(8.0)
    made.housekeeping()
    assert made.pending_records == []
    meter.fail["status"] = [unreachable("status")]
    again = made.stop_transaction("tx-1")
    assert again.ok


def test_tampered_record_refetched_then_returned_unchanged_with_warning(tmp_path: Path) -> None:
    meter = FakeMeter()
    alerts = RecordingAlerts()
    made, _ = controller(meter, tmp_path, alerts)
    made.start_transaction(transaction_request(REQUEST))
    meter.tamper = True
    answer = made.stop_transaction("tx-1")
    record = answer.record.ocmf
    assert answer.ok
    assert record != meter.stored["tx-1"]
    assert not verify_ocmf(record, PUBLIC_KEY)
    assert meter.calls.count("ocmf") >= 3  # begin record, fetch, fetch once more
    assert "OcmfSignatureInvalid" in alerts.active


def test_non_billable_stop_returns_record_with_warning() -> None:
    meter = FakeMeter(stop_status=1 | 16 | 8)
    alerts = RecordingAlerts()
    made, _ = controller(meter, alerts=alerts)
    made.start_transaction(transaction_request(REQUEST))
    answer = made.stop_transaction("tx-1")
    assert answer.ok
    assert "status 25" in alerts.active["TransactionNotBillable"]
    meter.stop_status = 17
    made.start_transaction(transaction_request({**REQUEST, "transaction_id": "tx-2"}))
    made.stop_transaction("tx-2")
    assert alerts.history == [
        ("warn", "TransactionNotBillable"),
        ("clear", "TransactionNotBillable"),
    ]


def test_intermediate_record_is_never_returned_as_final() -> None:
    meter = FakeMeter()
    made, _ = controller(meter)
    made.start_transaction(transaction_request(REQUEST))
    # The meter stopped it, but the record it serves still holds only the begin reading.
    meter.begin_only = True
    answer = made.stop_transaction("tx-1")
    assert not answer.ok
    assert "no end reading" in answer.error


def test_journal_entry_of_another_meter_is_not_returned(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path)
    first.start_transaction(transaction_request(REQUEST))
    first.stop_transaction("tx-1")
    replaced = FakeMeter(meter_id="99999999999")
    second, _ = controller(replaced, tmp_path)
    answer = second.stop_transaction("tx-1")
    assert not answer.ok


def test_a_new_meter_never_inherits_an_old_meters_open_transaction(tmp_path: Path) -> None:
    old_meter = FakeMeter()
    first, _ = controller(old_meter, tmp_path)
    first.start_transaction(
        transaction_request(REQUEST)
    )  # left open: the meter is swapped before the stop
    new_meter = FakeMeter(meter_id="99999999999")
    second, _ = controller(new_meter, tmp_path)
    assert second.pending_records == []  # the old meter's transaction is not reconciled
    assert second.start_transaction(transaction_request(REQUEST)).ok  # the same id on the new meter
    journal = TransactionJournal(tmp_path)
    entry = journal.get("tx-1")
    assert entry is not None
    assert entry.data["meter_id"] == "99999999999"
    assert entry.steps == ("start_requested", "start_confirmed")
    kept_apart = journal.get("tx-1 (meter 12024072805)")
    assert kept_apart is not None
    assert kept_apart.data["meter_id"] == "12024072805"
    assert kept_apart.started


def test_journal_directory_rules(tmp_path: Path) -> None:
    from lem_dcbm.service import journal_directory

    assert journal_directory("/data/j", "pm 1", {}) == Path("/data/j/pm_1")
    assert journal_directory("", "pm", {"LEM_DCBM_STATE_DIR": str(tmp_path)}) == tmp_path / "pm"
    chosen = journal_directory("", "pm", {"XDG_STATE_HOME": str(tmp_path)})
    assert chosen in (Path("/var/lib/lem-dcbm/pm"), tmp_path / "lem-dcbm" / "pm")


def test_a_start_and_stop_cost_four_journal_writes_for_five_steps(tmp_path: Path) -> None:
    meter = FakeMeter()
    made, _ = controller(meter, tmp_path)
    made.start_transaction(transaction_request(REQUEST))
    made.stop_transaction("tx-1")
    entry = TransactionJournal(tmp_path).get("tx-1")
    assert entry is not None
    assert entry.steps == (
        "start_requested",
        "start_confirmed",
        "stop_requested",
        "stop_confirmed",
        "ocmf_fetched",
    )
    assert entry.sequence == 4  # stop_confirmed is written together with the record
    assert entry.data["transaction_status"] == 17


def test_confirmed_stop_is_written_alone_when_the_record_cannot_be_fetched(
    tmp_path: Path,
) -> None:
    meter = FakeMeter()
    made, _ = controller(meter, tmp_path)
    made.start_transaction(transaction_request(REQUEST))
    meter.fail["ocmf"] = [MeterStatusError("GET", "/v1/ocmf", 500, "busy")] * 100
    assert not made.stop_transaction("tx-1").ok
    entry = TransactionJournal(tmp_path).get("tx-1")
    assert entry is not None
    assert entry.stopped
    assert entry.awaiting_record


def test_crash_between_stop_and_its_confirmation_is_recovered(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path)
    first.start_transaction(transaction_request(REQUEST))
    journal = TransactionJournal(tmp_path)
    journal.record("tx-1", "stop_requested")
    meter.stop_transaction("tx-1")  # the meter stopped it; the module died before noting it
    second, _ = controller(meter, tmp_path)
    second.housekeeping()
    entry = TransactionJournal(tmp_path).get("tx-1")
    assert entry is not None
    assert entry.stopped
    assert entry.has_record
    assert entry.data["found_stopped_at_start_up"] is True


class FillingDisk(TransactionJournal):
    """A journal whose disk is full while ``full`` is set."""

    full = False

    def record(self, *args: Any, **kwargs: Any) -> Any:
        if self.full:
            raise OSError(28, "No space left on device")
        return super().record(*args, **kwargs)


def test_a_journal_that_cannot_be_written_is_a_warning_and_records_still_flow(
    tmp_path: Path,
) -> None:
    meter = FakeMeter()
    alerts = RecordingAlerts()
    journal = FillingDisk(tmp_path)
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    made = MeterController(
        meter,
        ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)),
        clock,
        TimeSync(meter, clock, timezone="+00:00", dst={}),
        records=RecordBook(journal, alerts=alerts),
        alerts=alerts,
    )
    made.initialize()
    journal.full = True
    assert made.start_transaction(transaction_request(REQUEST)).ok
    stopped = made.stop_transaction("tx-1")
    assert stopped.ok  # the bill still reaches EVerest
    assert "No space left" in alerts.active["JournalWriteFailed"]
    assert alerts.history.count(("warn", "JournalWriteFailed")) == 1  # once, not per write
    journal.full = False
    made.start_transaction(transaction_request({**REQUEST, "transaction_id": "tx-2"}))
    assert "JournalWriteFailed" not in alerts.active


def test_a_journal_record_that_is_no_record_is_never_served(tmp_path: Path) -> None:
    journal = TransactionJournal(tmp_path)
    journal.record("tx-1", "start_requested", meter_id="12024072805")
    journal.record("tx-1", "ocmf_fetched", ocmf="OCMF|{}|{}", also=("start_confirmed",))
    made, _ = controller(FakeMeter(), tmp_path)  # a meter that knows no tx-1
    answer = made.stop_transaction("tx-1")
    assert not answer.ok
    assert answer.record is None
