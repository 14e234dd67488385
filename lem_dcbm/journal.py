"""The durable transaction journal: every step of a transaction and its signed record.

The OCMF record is the customer's bill, so each step a transaction passes is written to
disk before the module acts on it, and survives a crash at any instant. One small JSON
file per transaction holds its steps, its record and a few facts; the file name is a hash
of the transaction id (ids come from the network and are never used as paths). Files are
replaced atomically (see :mod:`lem_dcbm.atomic_file`).

Every write takes the next value of a counter that lives in the files themselves
(``sequence``). The journal stays bounded: it keeps the ``keep`` most recently written
transactions and, with ``max_age_days``, drops a finished transaction that many days after
its last write; a transaction still running, still waiting for its record, or whose record
has not gone out yet (fetched late and not published), is never dropped, whatever the
limits.

A wall clock can jump (a charger boots with a wrong clock until NTP corrects it), so
age is not wall time alone: every write also stores ``journal_seconds``, the time the
journal has seen pass on the monotonic clock, summed over the module's runs (each run
goes on from the highest value in the files). A transaction is old only when both its wall
age and its journal age exceed the limit. A jump in either direction changes only the
wall age; time while the module is not running counts only in the wall age (the journal
cannot tell it from a jump), so a record may stay longer than ``max_age_days``, never
shorter.

A file that cannot be read is moved into ``corrupt/`` with a warning, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lem_dcbm.atomic_file import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    fsync_directory,
    remove_temporaries,
    write_atomic,
)
from lem_dcbm.clock import Clock, SystemClock, rfc3339
from lem_dcbm.errors import ConfigError, LemDcbmError
from lem_dcbm.transaction_steps import STEPS as STEPS
from lem_dcbm.transaction_steps import Step, as_step, check_next

_LOGGER = logging.getLogger(__name__)

#: The largest entry file read: a record is a few KiB, an entry with it well under this.
MAX_ENTRY_BYTES = 256 * 1024
#: Sub-directory that receives files which could not be read.
CORRUPT_DIR = "corrupt"
#: Finished entries are checked for their age at most this often (monotonic seconds):
#: ages count in days, and the check reads every entry.
AGE_CHECK_INTERVAL_S = 3600.0
_FILE_PREFIX = "tx-"
_FILE_SUFFIX = ".json"


@dataclass(frozen=True)
class JournalEntry:
    """What the journal knows about one transaction."""

    transaction_id: str
    sequence: int  #: the journal's write counter at this entry's last write
    steps: tuple[Step, ...]  #: steps passed, each once, in the order first recorded
    ocmf: str | None  #: the signed record exactly as the meter sent it
    updated_at: str  #: RFC 3339 UTC time of the last write
    data: Mapping[str, Any] = field(hash=False)  #: facts the caller stored along
    #: The journal's own running time at the last write (s); None in entries written before.
    journal_seconds: float | None = None

    @property
    def started(self) -> bool:
        """The meter confirmed the start."""
        return Step.START_CONFIRMED in self.steps

    @property
    def stopped(self) -> bool:
        """The meter confirmed the stop."""
        return Step.STOP_CONFIRMED in self.steps

    @property
    def has_record(self) -> bool:
        """The signed record is in the journal."""
        return self.ocmf is not None

    @property
    def open(self) -> bool:
        """Started and not (known to be) stopped: it may still run at the meter."""
        return self.started and not self.stopped

    @property
    def awaiting_record(self) -> bool:
        """Stopped, but its signed record was not fetched yet."""
        return self.stopped and not self.has_record

    @property
    def record_unsent(self) -> bool:
        """Its record has not gone out: no backend may have it yet.

        A record answered at the stop went out with the answer; one fetched after the stop
        was answered (``late``) goes out once published (``late_published_at``).
        """
        late = self.data.get("late") is True
        return self.has_record and late and not self.data.get("late_published_at")


class CorruptEntryError(LemDcbmError, ValueError):
    """A journal file does not hold a valid entry."""


def entry_file_name(transaction_id: str) -> str:
    """The file name of a transaction's entry: a hash, whatever characters the id holds."""
    digest = hashlib.sha256(transaction_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{_FILE_PREFIX}{digest}{_FILE_SUFFIX}"


def encode_entry(entry: JournalEntry) -> bytes:
    """The file content for ``entry``; ``TypeError``/``ValueError`` for data JSON cannot hold."""
    document = {
        "transaction_id": entry.transaction_id,
        "sequence": entry.sequence,
        "steps": list(entry.steps),
        # ASCII escapes round-trip every Python string exactly, lone surrogates included.
        "ocmf": entry.ocmf,
        "updated_at": entry.updated_at,
        "data": dict(entry.data),
    }
    if entry.journal_seconds is not None:
        document["journal_seconds"] = entry.journal_seconds
    return (json.dumps(document, ensure_ascii=True, allow_nan=False, indent=2) + "\n").encode()


def decode_entry(raw: bytes) -> JournalEntry:
    """Parse a journal file's content; raise ``CorruptEntryError`` saying what is wrong."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CorruptEntryError(f"not JSON: {err}") from err
    if not isinstance(document, dict):
        raise CorruptEntryError("not a JSON object")
    transaction_id = _field(document, "transaction_id", str)
    sequence = _field(document, "sequence", int)
    steps = _field(document, "steps", list)
    ocmf = _field(document, "ocmf", (str, type(None)))
    updated_at = _field(document, "updated_at", str)
    data = _field(document, "data", dict)
    if not transaction_id:
        raise CorruptEntryError("empty transaction_id")
    if isinstance(sequence, bool) or sequence < 1:
        raise CorruptEntryError(f"bad sequence {sequence!r}")
    if any(step not in STEPS for step in steps) or len(set(steps)) != len(steps):
        raise CorruptEntryError(f"bad steps {steps!r}")
    return JournalEntry(
        transaction_id=transaction_id,
        sequence=sequence,
        steps=tuple(Step(step) for step in steps),
        ocmf=ocmf,
        updated_at=updated_at,
        data=MappingProxyType(data),
        journal_seconds=_journal_seconds(document.get("journal_seconds")),
    )


def _journal_seconds(value: Any) -> float | None:
    """A stored running time, or None (absent, or not a finite number of seconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _field(document: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = document.get(key)
    if not isinstance(value, kind):
        raise CorruptEntryError(f"field '{key}' missing or of the wrong type")
    return value


class TransactionJournal:
    """Durable per-transaction state in a directory; safe to share between threads."""

    def __init__(
        self,
        directory: Path,
        *,
        keep: int = 500,
        max_age_days: int = 0,
        clock: Clock | None = None,
    ) -> None:
        """Open (and create) the journal in ``directory``; ``ConfigError`` if it is unusable.

        ``keep`` bounds the number of transactions; ``max_age_days`` (0: no limit) drops a
        finished transaction that long after its last write, by ``clock``'s wall time and
        by the journal's own running time (``clock``'s monotonic time, summed over runs).
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        if max_age_days < 0:
            raise ValueError(f"max_age_days must be 0 (no limit) or more, not {max_age_days}")
        self._directory = Path(directory)
        self._keep = keep
        self._max_age = timedelta(days=max_age_days) if max_age_days else None
        self._clock = clock or SystemClock()
        self._next_age_check = float("-inf")
        self._lock = threading.Lock()
        _prepare_directory(self._directory)
        self._entries = self._load()
        self._sequence = max((entry.sequence for entry in self._entries.values()), default=0)
        #: The running time this run goes on from, and the monotonic time it began.
        self._ran_before = max(
            (e.journal_seconds for e in self._entries.values() if e.journal_seconds is not None),
            default=0.0,
        )
        self._run_began = self._clock.monotonic()

    @property
    def directory(self) -> Path:
        """Where the journal's files live."""
        return self._directory

    def record(
        self,
        transaction_id: str,
        step: str,
        *,
        ocmf: str | None = None,
        also: tuple[str, ...] = (),
        **data: Any,
    ) -> JournalEntry:
        """Add ``step`` (and ``data``) to a transaction; on disk when this returns.

        ``also`` names steps recorded before ``step`` in the same write (one fsync for
        several steps). ``ocmf`` is required with ``ocmf_fetched`` and refused without it.
        A failed write raises ``OSError`` and leaves the journal as it was.
        """
        new_steps = tuple(as_step(name) for name in (*also, step))
        if (Step.OCMF_FETCHED in new_steps) != (ocmf is not None):
            raise ValueError("an OCMF record goes with the step ocmf_fetched, and only there")
        if not transaction_id:
            raise ValueError("a journal entry needs a transaction id")
        with self._lock:
            previous = self._entries.get(transaction_id)
            steps = previous.steps if previous else ()
            passed: tuple[str, ...] = steps
            for name in new_steps:
                passed = (*passed, check_next(passed, name))
            entry = JournalEntry(
                transaction_id=transaction_id,
                sequence=self._sequence + 1,
                steps=(*steps, *(name for name in dict.fromkeys(new_steps) if name not in steps)),
                ocmf=ocmf if ocmf is not None else (previous.ocmf if previous else None),
                updated_at=rfc3339(self._clock.utc_now()),
                data={**(previous.data if previous else {}), **data},
                journal_seconds=self._journal_now(),
            )
            raw = encode_entry(entry)
            # Keep in memory exactly what a reload would give (JSON turns tuples into lists).
            entry = decode_entry(raw)
            write_atomic(self._path(transaction_id), raw)
            self._sequence = entry.sequence
            self._entries[transaction_id] = entry
            self._prune(written=transaction_id)
            return entry

    def get(self, transaction_id: str) -> JournalEntry | None:
        """The entry of ``transaction_id``, or None when the journal does not know it."""
        with self._lock:
            return self._entries.get(transaction_id)

    def entries(self) -> list[JournalEntry]:
        """Every entry, least recently written first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda entry: entry.sequence)

    def open_transactions(self) -> list[JournalEntry]:
        """Entries started and not stopped: they may still run at the meter."""
        return [entry for entry in self.entries() if entry.open]

    def awaiting_record(self) -> list[JournalEntry]:
        """Entries stopped at the meter whose signed record is still to be fetched."""
        return [entry for entry in self.entries() if entry.awaiting_record]

    def rename(self, transaction_id: str, new_id: str) -> JournalEntry:
        """Keep the entry of ``transaction_id`` under ``new_id`` (a reused id's earlier session).

        The new file is on disk before the old one goes: a crash in between leaves both.
        """
        if not new_id or new_id in self._entries:
            raise ValueError(f"cannot rename to {new_id!r}: empty or taken")
        with self._lock:
            old = self._entries.get(transaction_id)
            if old is None:
                raise ValueError(f"no journal entry {transaction_id!r}")
            self._sequence += 1
            raw = encode_entry(
                JournalEntry(
                    transaction_id=new_id,
                    sequence=self._sequence,
                    steps=old.steps,
                    ocmf=old.ocmf,
                    updated_at=rfc3339(self._clock.utc_now()),
                    data={**old.data, "session_of": transaction_id},
                    journal_seconds=self._journal_now(),
                )
            )
            renamed = decode_entry(raw)
            write_atomic(self._path(new_id), raw)
            self._path(transaction_id).unlink(missing_ok=True)
            fsync_directory(self._directory)
            del self._entries[transaction_id]
            self._entries[new_id] = renamed
            return renamed

    def _journal_now(self) -> float:
        """The journal's running time: earlier runs' and this one's, in seconds."""
        return round(self._ran_before + (self._clock.monotonic() - self._run_began), 3)

    def _journal_age(self, entry: JournalEntry) -> float:
        """Seconds of the journal's running time since ``entry``'s last write.

        An entry written before running time was kept counts from the start of this run.
        """
        written = entry.journal_seconds if entry.journal_seconds is not None else self._ran_before
        return self._journal_now() - written

    def _path(self, transaction_id: str) -> Path:
        return self._directory / entry_file_name(transaction_id)

    def _load(self) -> dict[str, JournalEntry]:
        removed = remove_temporaries(self._directory)
        if removed:
            _LOGGER.info("removed %d unfinished journal write(s)", len(removed))
        entries: dict[str, JournalEntry] = {}
        for path, entry in _scan(self._directory):
            if isinstance(entry, JournalEntry):
                entries[entry.transaction_id] = entry
            else:
                self._move_aside(path, entry)
        return entries

    def _move_aside(self, path: Path, reason: str) -> None:
        corrupt = self._directory / CORRUPT_DIR
        try:
            corrupt.mkdir(exist_ok=True)
            target = _unused_name(corrupt, path.name)
            os.replace(path, target)
            fsync_directory(self._directory)
        except OSError as err:
            _LOGGER.warning(
                "journal file %s is unreadable (%s) and could not be moved aside: %s",
                path,
                reason,
                err,
            )
            return
        _LOGGER.warning("journal file %s is unreadable (%s); moved to %s", path, reason, target)

    def _prune(self, written: str) -> None:
        """Drop finished entries beyond ``keep`` or past ``max_age_days``; never a needed one.

        Past ``max_age_days`` means by the wall clock and by the journal's running time.

        Needed are those still running or waiting for their record, those whose record has
        not gone out yet, and ``written``, the transaction this write was for.
        """
        excess = len(self._entries) - self._keep
        age_due = self._max_age is not None and self._clock.monotonic() >= self._next_age_check
        if excess <= 0 and not age_due:
            return
        finished = [
            e
            for e in self._entries.values()
            if not (e.open or e.awaiting_record or e.record_unsent or e.transaction_id == written)
        ]
        finished.sort(key=lambda entry: entry.sequence)
        doomed: dict[str, JournalEntry] = {}
        if age_due and self._max_age is not None:
            self._next_age_check = self._clock.monotonic() + AGE_CHECK_INTERVAL_S
            cutoff = self._clock.utc_now() - self._max_age
            limit_s = self._max_age.total_seconds()
            # Both ages: a wall clock that jumped alone never makes an entry old.
            doomed = {
                e.transaction_id: e
                for e in finished
                if _written_before(e, cutoff) and self._journal_age(e) > limit_s
            }
        aged = len(doomed)
        for entry in finished:
            if len(self._entries) - len(doomed) <= self._keep:
                break
            doomed.setdefault(entry.transaction_id, entry)
        removed = sum(self._drop(entry) for entry in doomed.values())
        if removed:
            try:
                fsync_directory(self._directory)
            except OSError as err:
                _LOGGER.warning("could not sync the journal directory: %s", err)
        if aged and self._max_age is not None:
            # Rare and in a batch: worth a line. The count limit drops one per new transaction.
            _LOGGER.info(
                "dropped %d finished transaction(s) last written over %d days ago from the journal",
                aged,
                self._max_age.days,
            )

    def _drop(self, entry: JournalEntry) -> bool:
        """Remove one entry's file and memory; False (with a warning) when the file stays."""
        try:
            self._path(entry.transaction_id).unlink(missing_ok=True)
        except OSError as err:
            _LOGGER.warning("could not drop journal entry %s: %s", entry.transaction_id, err)
            return False
        del self._entries[entry.transaction_id]
        return True


def _written_before(entry: JournalEntry, cutoff: datetime) -> bool:
    """True when the entry's last write lies before ``cutoff``; an unreadable time is not."""
    try:
        written = datetime.fromisoformat(entry.updated_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    if written.tzinfo is None:
        written = written.replace(tzinfo=timezone.utc)
    return written < cutoff


def read_journal(directory: Path) -> tuple[list[JournalEntry], list[tuple[Path, str]]]:
    """The entries in ``directory`` (least recently written first) and the unreadable files.

    Reads only: unlike :class:`TransactionJournal` it never creates, removes or moves a
    file, so a tool can look at the journal of a module that is running.
    """
    entries: list[JournalEntry] = []
    unreadable: list[tuple[Path, str]] = []
    for path, entry in _scan(directory):
        if isinstance(entry, JournalEntry):
            entries.append(entry)
        else:
            unreadable.append((path, entry))
    entries.sort(key=lambda entry: entry.sequence)
    return entries, unreadable


def read_entry_file(path: Path) -> bytes:
    """The bytes of one entry file: a regular file (no link followed), at most ``MAX_ENTRY_BYTES``.

    An entry is a few KiB; a link to a device or a huge file must never be read whole (a
    crash loop at every start). Raises ``CorruptEntryError`` saying why.
    """
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError as err:
        raise CorruptEntryError(f"cannot be opened as a regular file: {err}") from err
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CorruptEntryError("not a regular file")
        if info.st_size > MAX_ENTRY_BYTES:
            raise CorruptEntryError(f"{info.st_size} bytes, more than an entry can be")
        data = file.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise CorruptEntryError(f"more than {MAX_ENTRY_BYTES} bytes, more than an entry can be")
    return data


def _scan(directory: Path) -> Iterator[tuple[Path, JournalEntry | str]]:
    """Each entry file with its entry, or with the reason it cannot be read."""
    for path in sorted(directory.glob(f"{_FILE_PREFIX}*{_FILE_SUFFIX}")):
        try:
            entry = decode_entry(read_entry_file(path))
            if entry_file_name(entry.transaction_id) != path.name:
                raise CorruptEntryError("the name does not match the transaction it holds")
        except (OSError, CorruptEntryError) as err:
            yield path, str(err)
            continue
        yield path, entry


def _prepare_directory(directory: Path) -> None:
    """Create ``directory`` and prove that files can be written there."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(
            "journal_dir", f"cannot create or write the journal directory {directory}: {err}"
        ) from err


def _unused_name(directory: Path, name: str) -> Path:
    target = directory / name
    counter = 1
    while target.exists():
        target = directory / f"{name}.{counter}"
        counter += 1
    return target
