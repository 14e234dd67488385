"""A meter or mock lacking optional parts degrades: no GET /legal, refused settings, records."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.errors import MeterConnectionError, MeterStatusError
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal
from tests.support.fake_meter import FakeMeter
from tests.unit.test_controller_records import REQUEST, controller


def make(meter: FakeMeter, **overrides: Any) -> MeterController:
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    timesync = TimeSync(meter, clock, timezone="+01:00", dst={"activated": False})
    settings = ControllerSettings(start=StartSettings(tariff_id=2, cable_id=1), **overrides)
    controller = MeterController(meter, settings, clock, timesync)
    controller.initialize()
    return controller


@pytest.fixture
def meter() -> FakeMeter:
    return FakeMeter(no_get_legal=True)


def lost(method: str) -> MeterConnectionError:
    return MeterConnectionError(method, "/v1/legal", "read timed out")


def test_without_get_legal_start_and_stop_go_through_asking_it_once(meter: FakeMeter) -> None:
    controller = make(meter)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    stopped = controller.stop_transaction("tx-1")
    assert stopped.ok, stopped.error
    assert stopped.record is not None
    assert meter.calls.count("legal") == 1
    assert meter.calls.count("stop_transaction") == 1


def test_without_get_legal_a_repeated_start_is_answered_from_what_the_module_started(
    meter: FakeMeter,
) -> None:
    controller = make(meter)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    assert meter.calls.count("start_transaction") == 1


def test_without_get_legal_a_stop_of_an_id_not_started_here_lets_the_meter_decide(
    meter: FakeMeter,
) -> None:
    meter.running_id = meter.last_id = "tx-9"  # started before this module ran
    controller = make(meter)
    stopped = controller.stop_transaction("tx-9")
    assert stopped.ok, stopped.error
    assert meter.running_id is None

    meter.running_id = "tx-10"
    refused = controller.stop_transaction("tx-11")
    assert not refused.ok
    assert "409" in refused.error  # the meter's own refusal, passed on


def test_without_get_legal_stop_of_no_id_cannot_guess_which_runs(meter: FakeMeter) -> None:
    meter.running_id = "tx-9"
    controller = make(meter)
    answer = controller.stop_transaction("")
    assert not answer.ok
    assert "GET /legal" in answer.error
    assert "stop_transaction" not in meter.calls


def test_without_get_legal_a_lost_start_answer_is_not_sent_again(meter: FakeMeter) -> None:
    controller = make(meter)

    def started_then_lost() -> None:
        meter.running_id = "tx-1"
        raise lost("POST")

    meter.fail["start_transaction"] = [started_then_lost]
    answer = controller.start_transaction(transaction_request(REQUEST))
    assert not answer.ok
    assert "GET /legal" in answer.error
    assert "not sent again" in answer.error
    assert meter.calls.count("start_transaction") == 1


@pytest.mark.parametrize(("losses", "settled"), [(1, True), (10, False)])
def test_without_get_legal_a_lost_stop_answer_is_sent_again_never_assumed(
    meter: FakeMeter, losses: int, settled: bool
) -> None:
    controller = make(meter, transaction_retries=3, transaction_retry_delay_s=0.0)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    meter.fail["stop_transaction"] = [lost("PUT")] * losses
    answer = controller.stop_transaction("tx-1")
    assert answer.ok is settled
    # Stopped only when a PUT was carried out; else the error says what could settle it.
    assert (meter.running_id is None) is settled
    if not settled:
        assert "GET /legal" in (answer.error or "")


def test_refused_timezone_and_dst_are_dropped_once_and_starts_go_on(meter: FakeMeter) -> None:
    unprocessable = MeterStatusError("PUT", "/v1/settings", 422, '{"detail": "time.utc"}')
    meter.fail["put_settings"] = [lambda: None, unprocessable, unprocessable]
    controller = make(meter)
    writes_at_init = len(meter.settings_writes)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    # Before the start only the UTC time is written again; tz and DST are left out.
    later = meter.settings_writes[writes_at_init:]
    assert [next(iter(w["time"])) for w in later] == ["utc"]


def test_report_mode_passes_on_a_record_without_end_reading_naming_it() -> None:
    meter = FakeMeter(no_get_legal=True, begin_only=True)
    controller = make(meter, record_identity_checks="report", stop_record_wait_s=0.0)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    stopped = controller.stop_transaction("tx-1")
    assert stopped.ok, stopped.error
    kept = controller._book.kept("tx-1")  # noqa: SLF001 - the journal's verdict
    assert kept is not None
    failed = [f["check"] for f in kept.facts["verdict"]["failed_checks"]]
    assert "end_reading" in failed


def test_enforce_mode_withholds_a_record_without_end_reading() -> None:
    meter = FakeMeter(no_get_legal=True, begin_only=True)
    controller = make(meter, stop_record_wait_s=0.0)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    stopped = controller.stop_transaction("tx-1")
    assert not stopped.ok
    assert stopped.record is None


def test_a_clock_sync_failing_in_a_row_backs_off_to_an_hour() -> None:
    meter = FakeMeter()
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    timesync = TimeSync(meter, clock, timezone="+01:00", dst={"activated": False})
    meter.refuse_settings.add("time.utc")
    delays = []
    for _ in range(8):
        due = timesync.next_due
        assert due is not None
        clock.advance(due - clock.monotonic())
        timesync.sync_if_due()
        after = timesync.next_due
        assert after is not None
        delays.append(after - clock.monotonic())
    assert delays == [60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0]


def test_without_get_legal_a_restart_resumes_what_the_journal_says_this_module_started(
    tmp_path: Path,
) -> None:
    meter = FakeMeter(no_get_legal=True)
    first, _ = controller(meter, tmp_path)
    assert first.start_transaction(transaction_request(REQUEST)).ok
    second, _ = controller(meter, tmp_path)  # crash and restart; still running at the meter
    assert second.pending_records == []  # resumed, not taken for stopped
    # Even a stop without an id knows which transaction runs: the journal's.
    stopped = second.stop_transaction("")
    assert stopped.ok, stopped.error
    assert meter.running_id is None
    entry = TransactionJournal(tmp_path).get("tx-1")
    assert entry is not None
    assert entry.stopped
    assert entry.has_record
