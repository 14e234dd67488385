"""Journal retention by count and by age, on an injected clock."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.journal import AGE_CHECK_INTERVAL_S, TransactionJournal

RECORD = 'OCMF|{"PG":"T1"}|{"SD":"00"}'
DAY = 86400.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=datetime(2026, 1, 1, 8, 0, tzinfo=timezone.utc))


def open_journal(
    tmp_path: Path, clock: ManualClock, *, keep: int = 1000, max_age_days: int = 400
) -> TransactionJournal:
    return TransactionJournal(tmp_path, keep=keep, max_age_days=max_age_days, clock=clock)


def finished(journal: TransactionJournal, transaction_id: str) -> None:
    journal.record(
        transaction_id,
        "ocmf_fetched",
        also=("start_requested", "start_confirmed", "stop_requested", "stop_confirmed"),
        ocmf=RECORD,
    )


def ids(journal: TransactionJournal) -> list[str]:
    return [entry.transaction_id for entry in journal.entries()]


def files(journal: TransactionJournal) -> int:
    return len(list(journal.directory.glob("tx-*.json")))


def test_finished_transactions_older_than_the_limit_are_dropped(
    tmp_path: Path, clock: ManualClock
) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=400)
    finished(journal, "old-1")
    finished(journal, "old-2")
    journal.record("old-running", "start_confirmed")
    journal.record("old-awaiting", "stop_confirmed", also=("start_confirmed",))
    clock.advance(399 * DAY)
    finished(journal, "recent")
    assert ids(journal) == ["old-1", "old-2", "old-running", "old-awaiting", "recent"]

    clock.advance(1 * DAY + 1)
    finished(journal, "new")

    assert ids(journal) == ["old-running", "old-awaiting", "recent", "new"]
    assert files(journal) == 4
    assert ids(open_journal(tmp_path, clock)) == ids(journal)


def test_a_rewrite_makes_an_entry_young_again(tmp_path: Path, clock: ManualClock) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=10)
    journal.record("tx", "stop_confirmed", also=("start_confirmed",))
    clock.advance(30 * DAY)
    journal.record("tx", "ocmf_fetched", ocmf=RECORD)  # the record arrived late: now finished

    clock.advance(9 * DAY)
    finished(journal, "other")

    assert ids(journal) == ["tx", "other"]


def test_zero_days_means_no_age_limit(tmp_path: Path, clock: ManualClock) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=0)
    finished(journal, "ancient")
    clock.advance(10 * 365 * DAY)

    finished(journal, "new")

    assert ids(journal) == ["ancient", "new"]


def test_age_is_checked_at_most_once_an_interval(tmp_path: Path, clock: ManualClock) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=1)
    finished(journal, "first")  # the first write checks: nothing old yet
    clock.advance(DAY - 600)
    finished(journal, "second")  # checks again: "first" is not a day old yet
    clock.advance(1200)  # now it is, but the last check was 20 minutes ago

    finished(journal, "third")
    assert ids(journal) == ["first", "second", "third"]

    clock.advance(AGE_CHECK_INTERVAL_S)
    finished(journal, "fourth")
    assert ids(journal) == ["second", "third", "fourth"]


def test_count_and_age_together(tmp_path: Path, clock: ManualClock) -> None:
    journal = open_journal(tmp_path, clock, keep=3, max_age_days=5)
    for number in range(3):
        finished(journal, f"old-{number}")
    clock.advance(6 * DAY)
    for number in range(4):
        finished(journal, f"new-{number}")

    assert ids(journal) == ["new-1", "new-2", "new-3"]
    assert files(journal) == 3


def test_unfinished_ones_stay_beyond_both_limits(tmp_path: Path, clock: ManualClock) -> None:
    journal = open_journal(tmp_path, clock, keep=1, max_age_days=1)
    journal.record("running", "start_confirmed")
    journal.record("awaiting", "stop_confirmed", also=("start_confirmed",))
    clock.advance(30 * DAY)

    finished(journal, "done")

    assert ids(journal) == ["running", "awaiting", "done"]


def test_an_unreadable_write_time_is_not_taken_for_old(tmp_path: Path, clock: ManualClock) -> None:
    (tmp_path / "journal").mkdir()
    journal = open_journal(tmp_path / "journal", clock, max_age_days=1)
    finished(journal, "odd")
    path = next(journal.directory.glob("tx-*.json"))
    path.write_text(path.read_text().replace(journal.entries()[0].updated_at, "yesterday"))
    reopened = open_journal(tmp_path / "journal", clock, max_age_days=1)
    clock.advance(30 * DAY)

    finished(reopened, "new")

    assert ids(reopened) == ["odd", "new"]


def test_dropping_by_age_says_so_once(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=2)
    finished(journal, "a")
    finished(journal, "b")
    clock.advance(3 * DAY)

    with caplog.at_level(logging.INFO, logger="lem_dcbm.journal"):
        finished(journal, "c")

    assert [r.getMessage() for r in caplog.records] == [
        "dropped 2 finished transaction(s) last written over 2 days ago from the journal"
    ]


def test_max_age_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_age_days"):
        TransactionJournal(tmp_path, max_age_days=-1)


# -- a wall clock that jumps ---------------------------------------------------------------


def test_a_forward_jump_of_the_wall_clock_drops_nothing(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=400)
    for number in range(3):
        finished(journal, f"kept-{number}")
    clock.set_wall(clock.utc_now() + timedelta(days=500))  # the host clock runs ahead
    clock.advance(AGE_CHECK_INTERVAL_S + 1)

    with caplog.at_level(logging.INFO, logger="lem_dcbm.journal"):
        finished(journal, "after-the-jump")
        # A restart after the jump: the journal's running time goes on from its files.
        reopened = open_journal(tmp_path, clock, max_age_days=400)
        clock.advance(AGE_CHECK_INTERVAL_S + 1)
        finished(reopened, "after-a-restart")

    assert ids(reopened) == ["kept-0", "kept-1", "kept-2", "after-the-jump", "after-a-restart"]
    assert files(reopened) == 5
    assert not caplog.records


def test_a_clock_set_back_and_corrected_drops_nothing(tmp_path: Path, clock: ManualClock) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=400)
    right = clock.utc_now()
    clock.set_wall(right - timedelta(days=3 * 365))  # booted with a dead RTC battery
    finished(journal, "written-in-the-past")
    clock.advance(600)
    clock.set_wall(right + timedelta(seconds=600))  # NTP corrects the clock
    clock.advance(AGE_CHECK_INTERVAL_S)

    finished(journal, "after-the-correction")

    assert ids(journal) == ["written-in-the-past", "after-the-correction"]


def test_age_is_running_time_summed_over_runs(tmp_path: Path, clock: ManualClock) -> None:
    first_run = open_journal(tmp_path, clock, max_age_days=400)
    finished(first_run, "old")
    clock.advance(200 * DAY)
    finished(first_run, "middle")
    clock.advance(500 * DAY)  # powered off: the wall clock moves, the journal's time does not
    second_run = open_journal(tmp_path, clock, max_age_days=400)
    finished(second_run, "new")
    assert ids(second_run) == ["old", "middle", "new"]

    clock.advance(200 * DAY + AGE_CHECK_INTERVAL_S)  # "old" has now run 400 days and more
    finished(second_run, "newer")

    assert ids(second_run) == ["middle", "new", "newer"]


def test_an_entry_without_running_time_counts_from_the_start_of_the_run(
    tmp_path: Path, clock: ManualClock
) -> None:
    journal = open_journal(tmp_path, clock, max_age_days=10)
    finished(journal, "legacy")
    path = next(journal.directory.glob("tx-*.json"))
    document = json.loads(path.read_text())
    del document["journal_seconds"]  # as written before the journal kept its running time
    path.write_text(json.dumps(document))
    clock.advance(30 * DAY)  # the wall age is 30 days at once
    reopened = open_journal(tmp_path, clock, max_age_days=10)
    finished(reopened, "first-after-upgrade")
    assert ids(reopened) == ["legacy", "first-after-upgrade"]

    clock.advance(10 * DAY + AGE_CHECK_INTERVAL_S)
    finished(reopened, "later")

    assert ids(reopened) == ["later"]


def test_a_record_not_yet_handed_out_stays_beyond_both_limits(
    tmp_path: Path, clock: ManualClock
) -> None:
    journal = open_journal(tmp_path, clock, keep=1, max_age_days=1)
    journal.record(
        "unsent",
        "ocmf_fetched",
        also=("start_confirmed", "stop_confirmed"),
        ocmf=RECORD,
        late=True,  # fetched after the stop was answered, and the publication failed
    )
    journal.record("answered", "ocmf_fetched", also=("stop_confirmed",), ocmf=RECORD, late=False)
    clock.advance(30 * DAY)
    finished(journal, "new")
    assert ids(journal) == ["unsent", "new"]

    journal.record("unsent", "ocmf_fetched", ocmf=RECORD, late_published_at="2026-01-31T08:00Z")
    clock.advance(2 * DAY)
    finished(journal, "newer")

    assert ids(journal) == ["newer"]
