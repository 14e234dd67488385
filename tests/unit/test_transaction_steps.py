"""The transaction's steps and the one table of which may follow which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.transaction_steps import (
    STEPS,
    TRANSITIONS,
    IllegalStep,
    Step,
    UnknownStep,
    check_next,
    furthest,
)

RECORD = "OCMF|{}|{}"


def test_the_values_are_the_journal_format() -> None:
    assert [step.value for step in STEPS] == [
        "start_requested",
        "start_confirmed",
        "stop_requested",
        "stop_confirmed",
        "ocmf_fetched",
    ]
    assert Step.START_CONFIRMED == "start_confirmed"
    assert str(Step.STOP_REQUESTED) == "stop_requested"
    assert {"stop_confirmed"} - {Step.STOP_CONFIRMED} == set()


def test_the_table_names_every_step_and_only_moves_forward() -> None:
    assert set(TRANSITIONS) == {None, *STEPS}
    for before, after in TRANSITIONS.items():
        position = -1 if before is None else STEPS.index(before)
        assert all(STEPS.index(step) > position for step in after), before


@pytest.mark.parametrize(
    ("passed", "step"),
    [
        ((), Step.START_REQUESTED),
        ((), Step.STOP_REQUESTED),  # a dangling transaction the book never saw
        ((), Step.OCMF_FETCHED),  # the record of an id the book never saw
        ((Step.START_REQUESTED,), Step.START_CONFIRMED),
        ((Step.START_REQUESTED,), Step.OCMF_FETCHED),  # stopped while the module was away
        ((Step.START_CONFIRMED,), Step.STOP_CONFIRMED),  # found stopped at start-up
        ((Step.START_REQUESTED, Step.START_CONFIRMED), Step.STOP_REQUESTED),
        ((Step.STOP_REQUESTED,), Step.STOP_CONFIRMED),
        ((Step.STOP_CONFIRMED,), Step.OCMF_FETCHED),
        ((Step.START_CONFIRMED, Step.STOP_REQUESTED), Step.START_CONFIRMED),  # resumed: again
        ((Step.OCMF_FETCHED,), Step.OCMF_FETCHED),  # facts added to a kept record
    ],
)
def test_allowed_steps(passed: tuple[Step, ...], step: Step) -> None:
    assert check_next([s.value for s in passed], step.value) is step


@pytest.mark.parametrize(
    ("passed", "step"),
    [
        ((Step.STOP_REQUESTED,), Step.START_REQUESTED),
        ((Step.START_CONFIRMED, Step.STOP_CONFIRMED), Step.STOP_REQUESTED),
        ((Step.OCMF_FETCHED,), Step.START_REQUESTED),
        ((Step.OCMF_FETCHED,), Step.STOP_CONFIRMED),
    ],
)
def test_a_step_back_is_refused_with_a_typed_error(passed: tuple[Step, ...], step: Step) -> None:
    with pytest.raises(IllegalStep, match=f"{step.value} may not follow") as raised:
        check_next(passed, step)
    assert isinstance(raised.value, LemDcbmError)


def test_an_unknown_step_is_a_typed_error() -> None:
    with pytest.raises(UnknownStep, match="unknown journal step 'paused'"):
        check_next((), "paused")
    assert furthest(()) is None
    assert furthest(["stop_requested", "start_confirmed"]) is Step.STOP_REQUESTED


def test_the_journal_refuses_a_step_back_and_writes_nothing(tmp_path: Path) -> None:
    journal = TransactionJournal(tmp_path)
    journal.record("tx", Step.STOP_CONFIRMED, also=(Step.START_CONFIRMED,))
    before = (tmp_path / next(p.name for p in tmp_path.iterdir() if p.is_file())).read_bytes()
    with pytest.raises(IllegalStep):
        journal.record("tx", Step.START_REQUESTED)
    entry = journal.get("tx")
    assert entry is not None
    assert entry.steps == ("start_confirmed", "stop_confirmed")
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert [p.read_bytes() for p in files] == [before]
    # The file holds the plain values: the format of entries written before.
    assert json.loads(before)["steps"] == ["start_confirmed", "stop_confirmed"]


def test_an_entry_written_as_text_reads_back_as_steps(tmp_path: Path) -> None:
    TransactionJournal(tmp_path).record("tx", "stop_requested", also=("start_requested",))
    entry = TransactionJournal(tmp_path).get("tx")
    assert entry is not None
    assert entry.steps == (Step.START_REQUESTED, Step.STOP_REQUESTED)
    assert all(isinstance(step, Step) for step in entry.steps)


def test_the_book_does_not_note_a_step_back(caplog: pytest.LogCaptureFixture) -> None:
    book = RecordBook()
    book.step("tx", Step.START_CONFIRMED)
    book.stop_confirmed("tx")
    book.step("tx", Step.START_REQUESTED)
    kept = book.kept("tx")
    assert kept is not None
    assert kept.steps == (Step.START_CONFIRMED, Step.STOP_CONFIRMED)
    assert "start_requested may not follow stop_confirmed" in caplog.text
    book.store_record("tx", RECORD)  # a record is never refused
    assert book.record_of("tx") == RECORD


def test_a_record_is_written_even_where_its_confirmed_stop_may_not_be(tmp_path: Path) -> None:
    """A transaction the journal holds finished (its record only) and stopped once more."""
    journal = TransactionJournal(tmp_path)
    book = RecordBook(journal)
    book.store_record("tx", RECORD)
    book.stop_confirmed("tx", stopped_at="2026-11-22T10:05:00Z")
    later = 'OCMF|{}|{"SD": "later"}'
    book.store_record("tx", later)
    entry = TransactionJournal(tmp_path).get("tx")
    assert entry is not None
    assert entry.ocmf == later
    assert entry.steps == (Step.OCMF_FETCHED,)
    assert entry.data["stopped_at"] == "2026-11-22T10:05:00Z"
