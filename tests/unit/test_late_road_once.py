"""Exactly once: a record the stop answered with is never published as late, except the
record of EvseManager's start-up recovery stop, which OCPP drops: that one goes late once,
marked answered.

The simulated meter in process behind the real client, the real journal on disk; the
disk is made to refuse writes at the moment of the stop, as a full or read-only disk does.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.records.late_record import late_record_message, message_schema
from tests.support.faulty_transport import Rule
from tests.support.record_rig import Rig, request

FAILURES = {
    "disk full": errno.ENOSPC,
    "read-only": errno.EROFS,
}


def refuse_writes(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def failing(path: Path, data: bytes) -> None:
        raise OSError(code, "journal write refused")

    monkeypatch.setattr("lem_dcbm.journal.write_atomic", failing)


def charging(tmp_path: Path) -> Rig:
    """A rig whose meter runs transaction tx-1, with energy counted."""
    rig = Rig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    rig.charge()
    return rig


def background_until(rig: Rig, seconds: float, done: Callable[[], bool] = lambda: False) -> None:
    """Let housekeeping run on the rig's clock for ``seconds`` (or until ``done``)."""
    end = rig.clock.monotonic() + seconds
    while rig.clock.monotonic() < end and not done():
        rig.clock.advance(5)
        rig.controller.housekeeping()


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_answered_record_is_not_published_late_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    rig = charging(tmp_path)
    with monkeypatch.context() as disk:
        refuse_writes(disk, FAILURES[failure])
        answered = rig.controller.stop_transaction("tx-1")
    assert answered.ok  # the bill reached EVerest with the stop's answer
    rig.restart()  # the disk works again; the journal still shows tx-1 started only
    background_until(rig, 600)
    assert rig.late.published == []
    # EvseManager's boot-time stop(remembered id) still gets the same record, once more.
    again = rig.controller.stop_transaction("tx-1")
    assert again.ok
    assert again.record == answered.record
    entry = TransactionJournal(rig.journal_dir).get("tx-1")
    assert entry is not None
    assert entry.ocmf == answered.record.ocmf
    assert entry.data["late"] is False


def test_power_loss_right_after_the_answer_publishes_nothing_late(tmp_path: Path) -> None:
    rig = charging(tmp_path)
    assert rig.controller.stop_transaction("tx-1").ok
    rig.restart()
    background_until(rig, 600)
    assert rig.late.published == []


def test_a_record_owed_before_a_restart_goes_out_late_once(tmp_path: Path) -> None:
    rig = charging(tmp_path)
    gone = rig.transport.add(Rule("GET", "/v1/ocmf", "reset", until=rig.clock.monotonic() + 10_000))
    assert not rig.controller.stop_transaction("tx-1").ok  # answered without its record
    entry = TransactionJournal(rig.journal_dir).get("tx-1")
    assert entry is not None
    assert entry.data["record_owed"] is True
    rig.restart()
    gone.until = 0.0
    background_until(rig, 600, lambda: bool(rig.late.published))
    [late] = rig.late.published
    assert late.ocmf == rig.record_at_meter("tx-1")
    background_until(rig, 600)
    assert len(rig.late.published) == 1
    message = late_record_message(late, module_id="pm", published_at="2026-11-22T10:00:00Z")
    # What a backend deduplicates on: meter serial, transaction id, record number.
    assert (message["meter_id"], message["transaction_id"], message["pagination"]) == (
        rig.device.status()["meterId"],
        "tx-1",
        1,
    )


def test_a_record_owed_while_the_disk_is_full_goes_out_late_in_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = charging(tmp_path)
    gone = rig.transport.add(Rule("GET", "/v1/ocmf", "reset", until=rig.clock.monotonic() + 10_000))
    with monkeypatch.context() as disk:
        refuse_writes(disk, errno.ENOSPC)
        assert not rig.controller.stop_transaction("tx-1").ok
    gone.until = 0.0
    background_until(rig, 600, lambda: bool(rig.late.published))
    [late] = rig.late.published
    assert late.transaction_id == "tx-1"


@pytest.mark.parametrize(("asked_again", "published"), [(True, 0), (False, 1)])
def test_a_stop_the_module_died_in_goes_late_only_where_nobody_asks_again(
    tmp_path: Path, asked_again: bool, published: int
) -> None:
    """Under the EVerest manager EvseManager asks again after the restart; in API mode not."""
    rig = charging(tmp_path)
    # The module writes the stop's first step, the meter stops, the module dies unanswered.
    TransactionJournal(rig.journal_dir).record("tx-1", "stop_requested")
    rig.device.stop_transaction("tx-1", {"running": False})
    rig.restart(unanswered_stop_asked_again=asked_again)
    background_until(rig, 600, lambda: bool(rig.late.published))
    assert len(rig.late.published) == published
    if not asked_again:
        return
    # EvseManager's stop(remembered id) gets it: exactly once.
    assert rig.controller.stop_transaction("tx-1").ok


def test_a_journal_that_never_saw_the_stop_request_publishes_nothing_even_in_api_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = charging(tmp_path)
    with monkeypatch.context() as disk:
        refuse_writes(disk, errno.ENOSPC)
        assert rig.controller.stop_transaction("tx-1").ok
    rig.restart(unanswered_stop_asked_again=False)
    background_until(rig, 600)
    assert rig.late.published == []


def test_own_transaction_left_running_goes_late_once_when_the_next_start_stops_it(
    tmp_path: Path,
) -> None:
    rig = charging(tmp_path)
    rig.restart()  # the module died; EvseManager forgot tx-1 and starts anew
    assert rig.controller.start_transaction(transaction_request(request("tx-2"))).ok
    background_until(rig, 600, lambda: bool(rig.late.published))
    [late] = rig.late.published
    assert late.transaction_id == "tx-1"
    assert late.ocmf == rig.record_at_meter("tx-1")
    background_until(rig, 600)
    assert len(rig.late.published) == 1


def test_the_start_up_recovery_stop_is_answered_and_its_record_goes_late_once(
    tmp_path: Path,
) -> None:
    """Power lost mid-session: EvseManager's boot stop(remembered id) goes nowhere in OCPP."""
    rig = charging(tmp_path)
    rig.restart()  # the whole charger comes back; the meter kept tx-1 running
    recovered = rig.controller.stop_transaction("tx-1")
    assert recovered.ok
    record = rig.record_at_meter("tx-1")
    assert recovered.record.ocmf == record
    [late] = rig.late.published
    assert late.ocmf == record
    assert late.answered
    message = late_record_message(late, module_id="pm", published_at="2026-11-22T10:00:00Z")
    jsonschema.validate(message, message_schema())
    assert message["answered"] is True
    assert (message["meter_id"], message["pagination"]) == (rig.device.status()["meterId"], 1)
    # Asked again, left to the background, restarted and asked again: still once.
    assert rig.controller.stop_transaction("tx-1").record == recovered.record
    background_until(rig, 600)
    rig.restart()
    assert rig.controller.stop_transaction("tx-1").record == recovered.record
    background_until(rig, 600)
    assert len(rig.late.published) == 1
    entry = TransactionJournal(rig.journal_dir).get("tx-1")
    assert entry is not None
    assert entry.data["late"] is False  # it reached EVerest by the stop's answer too
    assert entry.data["answered"] is True
    assert "late_published_at" in entry.data


def test_in_api_mode_a_stop_after_a_restart_is_only_answered(tmp_path: Path) -> None:
    """The module restarts alone there: the stop is a live EvseManager's, OCPP gets it."""
    rig = charging(tmp_path)
    rig.restart(unanswered_stop_asked_again=False)
    recovered = rig.controller.stop_transaction("tx-1")
    assert recovered.ok
    assert recovered.record.ocmf == rig.record_at_meter("tx-1")
    background_until(rig, 600)
    assert rig.late.published == []


def test_a_stop_asked_again_after_its_answer_was_written_is_only_answered(
    tmp_path: Path,
) -> None:
    """The journal held the record at start-up: not a transaction left open by the loss."""
    rig = charging(tmp_path)
    answered = rig.controller.stop_transaction("tx-1")
    rig.restart()
    assert rig.controller.stop_transaction("tx-1").record == answered.record
    assert rig.late.published == []


def test_the_start_up_clean_up_stop_of_anything_running_also_sends_the_record_late(
    tmp_path: Path,
) -> None:
    """EvseManager without a store only calls stop("") at boot, and drops its answer."""
    rig = charging(tmp_path)
    rig.restart()
    cleaned = rig.controller.stop_transaction("")
    assert cleaned.ok
    [late] = rig.late.published
    assert (late.ocmf, late.answered) == (rig.record_at_meter("tx-1"), True)
