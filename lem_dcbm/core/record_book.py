"""Where the controller keeps transaction steps and signed records.

Backed by the durable journal when one is configured; the in-memory part serves
repeated stops quickly and keeps the module working if the disk fails. A journal write
that fails is logged and never blocks a record from reaching EVerest: EVerest stores the
record it receives, so losing our copy is bad, but withholding the bill is worse.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from lem_dcbm.journal import JournalEntry, TransactionJournal

_LOGGER = logging.getLogger(__name__)

#: Finished transactions whose records are also kept in memory.
MEMORY_RECORDS = 64
#: Backoff for fetching a record in the background: first retry, then doubling up to this.
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 300.0


@dataclass
class _Pending:
    next_attempt: float
    delay_s: float


class RecordBook:
    """Transaction steps and records, durable when a journal is given."""

    def __init__(self, journal: TransactionJournal | None = None) -> None:
        self._journal = journal
        #: The meter the records come from; a journal entry of another meter is not ours.
        self.meter_id = ""
        self._memory: OrderedDict[str, str] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    @property
    def durable(self) -> bool:
        """True when steps reach the disk."""
        return self._journal is not None

    def step(self, transaction_id: str, step: str, **data: Any) -> None:
        """Note a step of a transaction (durably when possible)."""
        if self._journal is None:
            return
        if self.meter_id:
            data.setdefault("meter_id", self.meter_id)
        try:
            self._journal.record(transaction_id, step, **data)
        except (OSError, ValueError, TypeError) as err:
            _LOGGER.error("journal write failed (%s of %s): %s", step, transaction_id, err)

    def store_record(self, transaction_id: str, record: str) -> None:
        """Keep the signed record of a stopped transaction; it is no longer pending."""
        with self._lock:
            self._memory[transaction_id] = record
            self._memory.move_to_end(transaction_id)
            while len(self._memory) > MEMORY_RECORDS:
                self._memory.popitem(last=False)
            self._pending.pop(transaction_id, None)
        if self._journal is not None:
            extra = {"meter_id": self.meter_id} if self.meter_id else {}
            try:
                self._journal.record(transaction_id, "ocmf_fetched", ocmf=record, **extra)
            except (OSError, ValueError, TypeError) as err:
                _LOGGER.error("journal write of the record of %s failed: %s", transaction_id, err)

    def record_of(self, transaction_id: str) -> str | None:
        """The stored signed record of a transaction, if any."""
        with self._lock:
            if transaction_id in self._memory:
                return self._memory[transaction_id]
        entry = self._entry(transaction_id)
        return entry.ocmf if entry is not None and entry.stopped else None

    def _entry(self, transaction_id: str) -> JournalEntry | None:
        entry = self._journal.get(transaction_id) if self._journal is not None else None
        if entry is None or not self._ours(entry):
            return None
        return entry

    def _ours(self, entry: JournalEntry) -> bool:
        recorded = entry.data.get("meter_id")
        return not recorded or not self.meter_id or recorded == self.meter_id

    # -- records fetched in the background ----------------------------------------------

    def mark_pending(self, transaction_id: str, now: float, *, due_now: bool = False) -> None:
        """The transaction is stopped but its record is missing: fetch it later."""
        with self._lock:
            if transaction_id not in self._pending:
                first = now if due_now else now + FIRST_RETRY_S
                self._pending[transaction_id] = _Pending(first, FIRST_RETRY_S)

    def due(self, now: float) -> list[str]:
        """Pending transactions whose next fetch attempt is due."""
        with self._lock:
            return [tid for tid, p in self._pending.items() if p.next_attempt <= now]

    def failed_again(self, transaction_id: str, now: float) -> float:
        """Back off after another failed fetch; return the new delay."""
        with self._lock:
            pending = self._pending.get(transaction_id)
            if pending is None:
                return 0.0
            pending.delay_s = min(MAX_RETRY_S, pending.delay_s * 2)
            pending.next_attempt = now + pending.delay_s
            return pending.delay_s

    @property
    def pending(self) -> list[str]:
        """Transactions stopped at the meter whose record is still to be fetched."""
        with self._lock:
            return list(self._pending)

    # -- start-up --------------------------------------------------------------------------

    def unfinished(self) -> tuple[list[str], list[str]]:
        """(transactions the journal saw start but not stop, stopped ones without record)."""
        if self._journal is None:
            return [], []
        open_ids = [e.transaction_id for e in self._journal.open_transactions() if self._ours(e)]
        requested = [
            e.transaction_id
            for e in self._journal.entries()
            if "start_requested" in e.steps and not e.started and not e.stopped and self._ours(e)
        ]
        awaiting = [e.transaction_id for e in self._journal.awaiting_record() if self._ours(e)]
        return open_ids + requested, awaiting
