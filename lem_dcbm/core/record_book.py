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
        #: Stops the meter confirmed whose step is written together with the record.
        self._unwritten_stops: dict[str, dict[str, Any]] = {}
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

    def stop_confirmed(self, transaction_id: str, **data: Any) -> None:
        """The meter confirmed a stop; the step is written with the record that follows.

        One write instead of two: if the module dies before the record is stored, the
        journal still holds ``stop_requested``, and start-up reconciliation finds the
        transaction stopped at the meter and fetches its record.
        """
        with self._lock:
            self._unwritten_stops[transaction_id] = data

    def store_record(self, transaction_id: str, record: str) -> None:
        """Keep the signed record of a stopped transaction; it is no longer pending."""
        with self._lock:
            self._memory[transaction_id] = record
            self._memory.move_to_end(transaction_id)
            while len(self._memory) > MEMORY_RECORDS:
                self._memory.popitem(last=False)
            self._pending.pop(transaction_id, None)
            stop = self._unwritten_stops.pop(transaction_id, None)
        if self._journal is not None:
            data = {**(stop or {}), **({"meter_id": self.meter_id} if self.meter_id else {})}
            also = ("stop_confirmed",) if stop is not None else ()
            try:
                self._journal.record(transaction_id, "ocmf_fetched", ocmf=record, also=also, **data)
            except (OSError, ValueError, TypeError) as err:
                _LOGGER.error("journal write of the record of %s failed: %s", transaction_id, err)

    def record_of(self, transaction_id: str) -> str | None:
        """The stored signed record of a transaction, if any."""
        with self._lock:
            if transaction_id in self._memory:
                return self._memory[transaction_id]
        entry = self._entry(transaction_id)
        return entry.ocmf if entry is not None else None

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
            stop = self._unwritten_stops.pop(transaction_id, None)
        if stop is not None:
            # No record to write it with: the confirmed stop goes to disk on its own.
            self.step(transaction_id, "stop_confirmed", **stop)

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

    def unfinished(self) -> tuple[list[str], list[str], set[str]]:
        """Unfinished transactions: (not stopped, stopped without record, confirmed started).

        The first list holds those whose start the meter confirmed and those whose start
        was only requested; the set tells the confirmed ones.
        """
        if self._journal is None:
            return [], [], set()
        open_ids = [e.transaction_id for e in self._journal.open_transactions() if self._ours(e)]
        requested = [
            e.transaction_id
            for e in self._journal.entries()
            if "start_requested" in e.steps and not e.started and not e.stopped and self._ours(e)
        ]
        awaiting = [e.transaction_id for e in self._journal.awaiting_record() if self._ours(e)]
        return open_ids + requested, awaiting, set(open_ids)
