"""The transaction journal: steps, byte-exact records, retention, damaged files, reloads."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lem_dcbm.atomic_file import TEMP_PREFIX, write_atomic
from lem_dcbm.clock import ManualClock
from lem_dcbm.errors import ConfigError
from lem_dcbm.journal import (
    CORRUPT_DIR,
    STEPS,
    JournalEntry,
    TransactionJournal,
    entry_file_name,
)

# A record as a meter sends it: unicode, escapes, odd spacing; none of it may change.
RECORD = (
    'OCMF|{"FV":"1.0","GI":"LEM DCBM 400/600","TX":"E","ID":"Zähler €",'
    '"RD":[{"TM":"2026-11-22T10:00:00,000+0100 S","RV":0.01,"ST":"G"}] }|'
    '{"SD":"3045022100ab\\u00e9\\n","SA":"ECDSA-secp256r1-SHA256"}  '
)


def _journal(tmp_path: Path, keep: int = 500) -> TransactionJournal:
    clock = ManualClock(start=datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    return TransactionJournal(tmp_path / "journal", keep=keep, clock=clock)


def _run_through(journal: TransactionJournal, transaction_id: str, steps: int) -> None:
    for step in STEPS[:steps]:
        journal.record(transaction_id, step, ocmf=RECORD if step == "ocmf_fetched" else None)


def test_steps_accumulate_and_properties_follow(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    first = journal.record("tx-1", "start_requested", evse_id="DE*ABC*E1")
    assert first.steps == ("start_requested",)
    assert not first.started
    assert not first.open
    started = journal.record("tx-1", "start_confirmed", begin_reading=1.5)
    assert started.steps == ("start_requested", "start_confirmed")
    assert started.open
    assert dict(started.data) == {"evse_id": "DE*ABC*E1", "begin_reading": 1.5}
    journal.record("tx-1", "stop_requested")
    stopped = journal.record("tx-1", "stop_confirmed")
    assert stopped.stopped
    assert not stopped.open
    assert stopped.awaiting_record
    done = journal.record("tx-1", "ocmf_fetched", ocmf=RECORD)
    assert done.steps == STEPS
    assert done.has_record
    assert not done.awaiting_record
    assert done.sequence == 5
    assert done.updated_at == "2026-11-22T10:00:00.000Z"
    assert journal.get("tx-1") == done


def test_a_repeated_step_is_kept_once(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.record("tx-1", "stop_requested")
    again = journal.record("tx-1", "stop_requested", attempt=2)
    assert again.steps == ("stop_requested",)
    assert again.data["attempt"] == 2


def test_record_is_stored_byte_exact(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    # A lone surrogate cannot be UTF-8 encoded; the journal must still keep it exactly.
    odd = RECORD + "\ud800"
    journal.record("tx-1", "ocmf_fetched", ocmf=RECORD)
    journal.record("tx-2", "ocmf_fetched", ocmf=odd)
    reloaded = _journal(tmp_path)
    assert reloaded.get("tx-1").ocmf == RECORD  # type: ignore[union-attr]
    assert reloaded.get("tx-2").ocmf == odd  # type: ignore[union-attr]


def test_a_record_fetched_again_replaces_the_first(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.record("tx-1", "ocmf_fetched", ocmf="OCMF|{}|{}")
    assert journal.record("tx-1", "ocmf_fetched", ocmf=RECORD).ocmf == RECORD


@pytest.mark.parametrize(
    ("step", "ocmf"),
    [("paused", None), ("ocmf_fetched", None), ("stop_confirmed", RECORD)],
)
def test_bad_steps_are_refused_and_nothing_is_written(
    tmp_path: Path, step: str, ocmf: str | None
) -> None:
    journal = _journal(tmp_path)
    with pytest.raises(ValueError, match="step|OCMF"):
        journal.record("tx-1", step, ocmf=ocmf)
    assert journal.get("tx-1") is None
    assert list(journal.directory.iterdir()) == []


def test_data_json_cannot_hold_is_refused_before_writing(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    with pytest.raises(TypeError):
        journal.record("tx-1", "start_requested", when=object())
    assert journal.get("tx-1") is None
    assert list(journal.directory.iterdir()) == []


def test_ids_never_become_paths(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    hostile = "../../etc/passwd\x00/..\\é"
    journal.record(hostile, "start_requested")
    files = list(journal.directory.iterdir())
    assert [f.name for f in files] == [entry_file_name(hostile)]
    assert json.loads(files[0].read_text())["transaction_id"] == hostile
    assert _journal(tmp_path).get(hostile) is not None


def test_reload_gives_the_same_entries_in_order(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _run_through(journal, "tx-a", 5)
    _run_through(journal, "tx-b", 2)
    journal.record("tx-c", "start_requested", connector=1, tags=["a", "b"])
    _run_through(journal, "tx-d", 4)
    reloaded = _journal(tmp_path)
    assert reloaded.entries() == journal.entries()
    assert [e.transaction_id for e in reloaded.entries()] == ["tx-a", "tx-b", "tx-c", "tx-d"]
    assert [e.transaction_id for e in reloaded.open_transactions()] == ["tx-b"]
    assert [e.transaction_id for e in reloaded.awaiting_record()] == ["tx-d"]
    # The counter continues where the files left it.
    assert reloaded.record("tx-e", "start_requested").sequence == 13


def test_retention_keeps_the_newest_and_every_unfinished_one(tmp_path: Path) -> None:
    journal = _journal(tmp_path, keep=3)
    _run_through(journal, "open-old", 2)
    _run_through(journal, "awaiting-old", 4)
    for number in range(6):
        _run_through(journal, f"done-{number}", 5)
    kept = [entry.transaction_id for entry in journal.entries()]
    assert kept == ["open-old", "awaiting-old", "done-5"]
    assert len(list(journal.directory.glob("tx-*.json"))) == 3
    assert _journal(tmp_path, keep=3).entries() == journal.entries()
    # Once finished they are ordinary entries and make room for newer ones.
    journal.record("awaiting-old", "ocmf_fetched", ocmf=RECORD)
    journal.record("open-old", "stop_confirmed")
    journal.record("open-old", "ocmf_fetched", ocmf=RECORD)
    _run_through(journal, "done-6", 5)
    kept = [entry.transaction_id for entry in journal.entries()]
    assert kept == ["awaiting-old", "open-old", "done-6"]


def test_retention_orders_by_last_write(tmp_path: Path) -> None:
    journal = _journal(tmp_path, keep=2)
    _run_through(journal, "first", 5)
    _run_through(journal, "second", 5)
    journal.record("first", "ocmf_fetched", ocmf=RECORD)  # written again: now the newest
    _run_through(journal, "third", 5)
    assert [entry.transaction_id for entry in journal.entries()] == ["first", "third"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"transaction_id": "tx-9", "sequence": 3, "ste',
        b"\x00\xff garbage \xfe",
        b"",
        b"[1, 2, 3]",
        b'{"transaction_id": "tx-9", "sequence": "3", "steps": [], "ocmf": null,'
        b' "updated_at": "x", "data": {}}',
        b'{"transaction_id": "tx-9", "sequence": 3, "steps": ["teleported"], "ocmf": null,'
        b' "updated_at": "x", "data": {}}',
        b"[" * 100000,
    ],
    ids=["truncated", "binary", "empty", "array", "wrong-type", "unknown-step", "deep"],
)
def test_a_corrupt_file_is_moved_aside_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    journal = _journal(tmp_path)
    _run_through(journal, "tx-good", 5)
    bad = journal.directory / entry_file_name("tx-9")
    bad.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.journal"):
        reloaded = _journal(tmp_path)
    assert [entry.transaction_id for entry in reloaded.entries()] == ["tx-good"]
    assert not bad.exists()
    assert (journal.directory / CORRUPT_DIR / bad.name).read_bytes() == content
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert bad.name in warnings[0].getMessage()
    assert "moved to" in warnings[0].getMessage()
    # The journal goes on working, for that id too.
    assert reloaded.record("tx-9", "start_requested").steps == ("start_requested",)


def test_a_file_under_another_ids_name_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = _journal(tmp_path)
    entry = journal.record("tx-1", "start_requested")
    (journal.directory / entry_file_name(entry.transaction_id)).rename(
        journal.directory / entry_file_name("tx-2")
    )
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.journal"):
        assert _journal(tmp_path).entries() == []
    assert "does not match" in caplog.text


def test_corrupt_files_with_the_same_name_are_all_kept(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    bad = journal.directory / entry_file_name("tx-9")
    for content in (b"one", b"two"):
        bad.write_bytes(content)
        _journal(tmp_path)
    aside = sorted(p.read_bytes() for p in (journal.directory / CORRUPT_DIR).iterdir())
    assert aside == [b"one", b"two"]


def test_leftover_temporary_files_are_removed(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _run_through(journal, "tx-1", 3)
    half_written = journal.directory / f"{TEMP_PREFIX}abc.part"
    half_written.write_bytes(b'{"transaction_id": "tx-1", "seq')
    unrelated = journal.directory / "README"
    unrelated.write_text("left alone")
    reloaded = _journal(tmp_path)
    assert reloaded.entries() == journal.entries()
    assert not half_written.exists()
    assert unrelated.exists()


def test_a_failed_write_leaves_the_journal_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = _journal(tmp_path)
    before = journal.record("tx-1", "start_requested")

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lem_dcbm.atomic_file.os.fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        journal.record("tx-1", "start_confirmed")
    monkeypatch.undo()
    assert journal.get("tx-1") == before
    assert [p.name for p in journal.directory.iterdir()] == [entry_file_name("tx-1")]
    assert _journal(tmp_path).get("tx-1") == before


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    journal = _journal(tmp_path)

    def writer(number: int) -> None:
        for index in range(10):
            _run_through(journal, f"tx-{number}-{index}", 5)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = _journal(tmp_path).entries()
    assert len(entries) == 40
    assert all(entry.steps == STEPS and entry.ocmf == RECORD for entry in entries)
    assert sorted(entry.sequence for entry in entries)[-1] == 200
    assert len({entry.sequence for entry in entries}) == 40


def test_the_directory_is_created_with_its_parents(tmp_path: Path) -> None:
    journal = TransactionJournal(tmp_path / "a" / "b" / "journal")
    assert journal.directory.is_dir()
    assert journal.entries() == []


@pytest.mark.parametrize("where", ["below-a-file", "is-a-file"])
def test_an_unusable_directory_is_a_config_error(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    directory = blocker / "journal" if where == "below-a-file" else blocker
    with pytest.raises(ConfigError) as caught:
        TransactionJournal(directory)
    assert caught.value.key == "journal_dir"
    assert str(directory) in caught.value.problem


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        TransactionJournal(tmp_path, keep=0)


def test_write_atomic_replaces_the_whole_content(tmp_path: Path) -> None:
    target = tmp_path / "file"
    write_atomic(target, b"a much longer first content")
    write_atomic(target, b"short")
    assert target.read_bytes() == b"short"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_entries_are_immutable(tmp_path: Path) -> None:
    entry = _journal(tmp_path).record("tx-1", "start_requested", connector=1)
    assert isinstance(entry, JournalEntry)
    with pytest.raises(TypeError):
        entry.data["connector"] = 2  # type: ignore[index]


def test_several_steps_in_one_write(tmp_path: Path) -> None:
    journal = TransactionJournal(tmp_path)
    journal.record("tx", "start_confirmed")
    entry = journal.record("tx", "ocmf_fetched", ocmf="OCMF|{}|{}", also=("stop_confirmed",))
    assert entry.steps == ("start_confirmed", "stop_confirmed", "ocmf_fetched")
    assert entry.sequence == 2
    assert TransactionJournal(tmp_path).get("tx") == entry
    with pytest.raises(ValueError, match="unknown journal step"):
        journal.record("tx", "ocmf_fetched", ocmf="x", also=("nonsense",))


@pytest.mark.parametrize("kind", ["link to /dev/zero", "300 MB", "fifo"])
def test_a_file_that_cannot_be_an_entry_is_never_read_whole(tmp_path: Path, kind: str) -> None:
    journal_dir = tmp_path / "journal"
    TransactionJournal(journal_dir).record("tx-1", "start_requested")
    hostile = journal_dir / entry_file_name("tx-2")
    if kind == "link to /dev/zero":
        hostile.symlink_to("/dev/zero")
    elif kind == "300 MB":
        with open(hostile, "wb") as file:
            file.truncate(300 * 1024 * 1024)  # sparse: no disk used, but 300 MB to read
    else:
        os.mkfifo(hostile)
    journal = TransactionJournal(journal_dir)  # returns at once, reads nothing of it
    assert [e.transaction_id for e in journal.entries()] == ["tx-1"]
    assert not hostile.exists()
    assert not hostile.is_symlink()
    assert len(list((journal_dir / "corrupt").iterdir())) == 1
