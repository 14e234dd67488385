"""Where the controller keeps transaction steps and signed records.

Backed by the durable journal when one is configured; the in-memory part keeps the
module working (and serves the journal-less mode) if the disk fails. A journal write that
fails is logged and never blocks a record from reaching EVerest: EVerest stores the
record it receives, so losing our copy is bad, but withholding the bill is worse.

What is kept per transaction (journal data keys, read by ``lem-dcbm records``):
``meter_id``; the start body as sent (``evse_id``, ``client_id``, ``tariff_id``,
``cable_id``, ``tariff_text``); ``previous_pagination`` (the highest record number this
meter had given before the start); ``pagination``, ``started_at``, ``meter_index`` (the
slot of the meter's ring the transaction took), ``stopped_at``, ``transaction_status``;
``not_started_at_meter`` for a start only requested that the meter never ran; with the
record ``public_key_ocmf``, ``verdict``, ``fetched_at``
and ``late`` (the record reached EVerest only by the late-record road), then
``late_published_at``; ``record_owed`` (True) once it is known that no stop answer carried
the record (see :meth:`RecordBook.owe`); ``answered`` (True) once a stop's answer carried it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lem_dcbm.core.ports import Alerts, Journal, JournalEntryView
from lem_dcbm.retry import RetryPolicy
from lem_dcbm.transaction_steps import IllegalStep, Step, check_next

_LOGGER = logging.getLogger(__name__)

#: Vendor warning sub-type for a journal that cannot be written (disk full, read-only).
JOURNAL_WRITE_FAILED = "JournalWriteFailed"
#: Journal data key: no stop answer carried this record, so it goes out on the late road.
RECORD_OWED = "record_owed"
#: Finished transactions whose records are also kept in memory.
MEMORY_RECORDS = 64
#: Fetching a missing record in the background: first retry after 2 s, doubling to 5 min.
BACKGROUND_FETCH = RetryPolicy(attempts=None, first_delay_s=2.0, max_delay_s=300.0)


@dataclass(frozen=True, slots=True)
class KeptTransaction:
    """What the book knows about one transaction: its facts and its record, if any."""

    transaction_id: str
    record: str | None
    facts: Mapping[str, Any]
    steps: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Stopped at the meter or holding its record: a new start is a new session."""
        return self.record is not None or Step.STOP_CONFIRMED in self.steps


@dataclass
class _Pending:
    next_attempt: float
    retry: int


class RecordBook:
    """Transaction steps and records, durable when a journal is given.

    Not thread-safe on purpose: the controller makes every call under its own lock (the
    journal below has a lock of its own, as other readers may share it).
    """

    def __init__(
        self,
        journal: Journal | None = None,
        fetch_policy: RetryPolicy | None = None,
        *,
        alerts: Alerts | None = None,
    ) -> None:
        self._journal = journal
        #: Told when the journal cannot be written (and when it can again).
        self._alerts = alerts
        self._journal_failing = False
        self._fetch_policy = fetch_policy or BACKGROUND_FETCH
        #: The meter the records come from; a journal entry of another meter is not ours.
        self.meter_id = ""
        self._memory: OrderedDict[str, KeptTransaction] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        #: Stops the meter confirmed whose step is written together with the record.
        self._unwritten_stops: dict[str, dict[str, Any]] = {}

    # -- steps ------------------------------------------------------------------------------

    def step(self, transaction_id: str, step: Step, **data: Any) -> None:
        """Note a step of a transaction (durably when possible).

        A step that may not follow the ones passed (``transaction_steps.TRANSITIONS``) is
        refused with an error line and not noted: it would mislead the start-up
        reconciliation, and a record is never refused (it may follow any step).
        """
        refused = self._refusal(transaction_id, step)
        if refused is not None:
            _LOGGER.error("transaction %s: %s; not noted", transaction_id, refused)
            return
        self._remember(transaction_id, data, step=step)
        if self._journal is None:
            return
        if self.meter_id:
            data.setdefault("meter_id", self.meter_id)
        try:
            self._journal.record(transaction_id, step, **data)
        except (OSError, ValueError, TypeError) as err:
            self._write_failed(f"journal write failed ({step} of {transaction_id}): {err}")
        else:
            self._write_succeeded()

    def _refusal(self, transaction_id: str, step: Step) -> IllegalStep | None:
        """Why ``step`` may not be noted for the transaction now (``TRANSITIONS``), or None."""
        kept = self.kept(transaction_id)
        try:
            check_next(kept.steps if kept is not None else (), step)
        except IllegalStep as err:
            return err
        return None

    def _write_failed(self, message: str) -> None:
        _LOGGER.error(message)
        if not self._journal_failing and self._alerts is not None:
            self._alerts.warn(
                JOURNAL_WRITE_FAILED,
                f"{message}; records still reach EVerest, but a crash could lose the module's copy",
            )
        self._journal_failing = True

    def _write_succeeded(self) -> None:
        if self._journal_failing:
            self._journal_failing = False
            _LOGGER.info("the journal can be written again")
            if self._alerts is not None:
                self._alerts.clear(JOURNAL_WRITE_FAILED)

    def new_session(self, transaction_id: str) -> None:
        """A start for ``transaction_id``: an earlier, finished session of that id moves aside.

        EVerest may reuse an id; the earlier session's record must never answer for the
        new one, and it stays in the journal under an archive name for the operator. An
        entry of another meter (the meter was swapped) moves aside whatever its state: a
        new meter never inherits an old meter's transaction.
        """
        foreign = self._journal.get(transaction_id) if self._journal is not None else None
        if foreign is not None and self._journal is not None and not self._ours(foreign):
            other = foreign.data.get("meter_id")
            try:
                self._journal.rename(transaction_id, f"{transaction_id} (meter {other})")
            except (OSError, ValueError) as err:
                _LOGGER.error("could not move aside meter %s's %s: %s", other, transaction_id, err)
            else:
                _LOGGER.warning(
                    "transaction id %s was meter %s's; its entry is kept apart",
                    transaction_id,
                    other,
                )
        kept = self.kept(transaction_id)
        if kept is None or not kept.finished:
            return
        self._memory.pop(transaction_id, None)
        self._pending.pop(transaction_id, None)
        if self._journal is None:
            return
        pagination = kept.facts.get("pagination")
        archive_id = f"{transaction_id} (session {pagination if pagination else 'earlier'})"
        try:
            self._journal.rename(transaction_id, archive_id)
        except (OSError, ValueError) as err:
            _LOGGER.error("could not move aside the earlier session of %s: %s", transaction_id, err)
        else:
            _LOGGER.warning(
                "transaction id %s used again; its earlier session is kept as %r",
                transaction_id,
                archive_id,
            )

    def stop_confirmed(self, transaction_id: str, **data: Any) -> None:
        """The meter confirmed a stop; the step is written with the record that follows.

        One write instead of two: if the module dies before the record is stored, the
        journal still holds ``stop_requested``, and start-up reconciliation finds the
        transaction stopped at the meter and fetches its record.
        """
        self._remember(transaction_id, data, step=Step.STOP_CONFIRMED)
        self._unwritten_stops[transaction_id] = data

    def store_record(self, transaction_id: str, record: str, **data: Any) -> None:
        """Keep the signed record of a stopped transaction; it is no longer pending."""
        self._pending.pop(transaction_id, None)
        stop = self._unwritten_stops.pop(transaction_id, None)
        facts = {**(stop or {}), **data}
        # The record is never refused: a confirmed stop that may not be noted where the
        # journal stands (a transaction already finished) leaves only its facts.
        noted = stop is not None and self._refusal(transaction_id, Step.STOP_CONFIRMED) is None
        also = (Step.STOP_CONFIRMED,) if noted else ()
        self._remember(transaction_id, facts, step=Step.OCMF_FETCHED, record=record)
        if self._journal is None:
            return
        if self.meter_id:
            facts["meter_id"] = self.meter_id
        try:
            self._journal.record(transaction_id, Step.OCMF_FETCHED, ocmf=record, also=also, **facts)
        except (OSError, ValueError, TypeError) as err:
            self._write_failed(f"journal write of the record of {transaction_id} failed: {err}")
        else:
            self._write_succeeded()

    def owe(self, transaction_id: str) -> None:
        """No stop answer carries this record: once fetched, it goes out on the late road.

        Written before it is acted on. The late road is taken only on this positive fact:
        a record the journal cannot show owed (it could not be written at the stop, or the
        module died between the stop and the answer) may have reached EVerest with the
        stop's answer, and must not be billed a second time.
        """
        kept = self.kept(transaction_id)
        if kept is not None and kept.record is not None:
            return
        steps = kept.steps if kept is not None else ()
        self.step(
            transaction_id, Step(steps[-1]) if steps else Step.STOP_REQUESTED, **{RECORD_OWED: True}
        )

    def owed(self, transaction_id: str) -> bool:
        """True when the journal (or, if it could not be written, this run) owes the record."""
        kept = self.kept(transaction_id)
        remembered = self._memory.get(transaction_id)
        return any(
            known is not None and known.facts.get(RECORD_OWED) is True
            for known in (kept, remembered)
        )

    def died_in_stop(self, transaction_id: str) -> bool:
        """The journal shows a stop requested and no record: the module died before answering.

        The record is written before a stop is answered with it, so a journal that could
        write the request and holds no record saw no answer, unless the disk filled up or
        turned read-only between the two writes.
        """
        entry = self._entry(transaction_id)
        return entry is not None and entry.ocmf is None and Step.STOP_REQUESTED in entry.steps

    def note(self, transaction_id: str, **data: Any) -> None:
        """Add facts to a transaction that already holds its record (e.g. its publication)."""
        kept = self.kept(transaction_id)
        if kept is None or kept.record is None:
            return
        self.store_record(transaction_id, kept.record, **data)

    # -- reading ----------------------------------------------------------------------------

    def kept(self, transaction_id: str) -> KeptTransaction | None:
        """What the journal (or, without one, memory) holds for ``transaction_id``."""
        entry = self._entry(transaction_id)
        if entry is not None:
            return KeptTransaction(transaction_id, entry.ocmf, dict(entry.data), entry.steps)
        return self._memory.get(transaction_id)

    def record_of(self, transaction_id: str) -> str | None:
        """The kept signed record of a transaction, if any."""
        kept = self.kept(transaction_id)
        return kept.record if kept is not None else None

    def highest_pagination(self) -> int | None:
        """The highest record number (PG) this meter's kept transactions carry."""
        numbers: list[int] = []
        if self._journal is not None:
            entries = [e for e in self._journal.entries() if self._ours(e)]
            numbers += [e.data["pagination"] for e in entries if _is_int(e.data.get("pagination"))]
        numbers += [
            k.facts["pagination"]
            for k in self._memory.values()
            if _is_int(k.facts.get("pagination"))
        ]
        return max(numbers, default=None)

    def _remember(
        self, transaction_id: str, data: Mapping[str, Any], *, step: Step, record: str | None = None
    ) -> None:
        previous = self._memory.get(transaction_id)
        steps = previous.steps if previous else ()
        self._memory[transaction_id] = KeptTransaction(
            transaction_id,
            record if record is not None else (previous.record if previous else None),
            {**(previous.facts if previous else {}), **data},
            steps if step in steps else (*steps, step),
        )
        self._memory.move_to_end(transaction_id)
        while len(self._memory) > MEMORY_RECORDS:
            self._memory.popitem(last=False)

    def _entry(self, transaction_id: str) -> JournalEntryView | None:
        entry = self._journal.get(transaction_id) if self._journal is not None else None
        if entry is None or not self._ours(entry):
            return None
        return entry

    def _ours(self, entry: JournalEntryView) -> bool:
        recorded = entry.data.get("meter_id")
        return not recorded or not self.meter_id or recorded == self.meter_id

    # -- records fetched in the background ----------------------------------------------

    def mark_pending(self, transaction_id: str, now: float, *, due_now: bool = False) -> None:
        """The transaction is stopped but its record is missing: fetch it later."""
        if transaction_id not in self._pending:
            first = now if due_now else now + self._fetch_policy.delay(0)
            self._pending[transaction_id] = _Pending(first, 0)
        stop = self._unwritten_stops.pop(transaction_id, None)
        if stop is not None:
            # No record to write it with: the confirmed stop goes to disk on its own.
            self.step(transaction_id, Step.STOP_CONFIRMED, **stop)

    def unpublished_late(self) -> list[str]:
        """Late records kept in the journal that were never published (the module died)."""
        if self._journal is None:
            return []
        return [
            e.transaction_id
            for e in self._journal.entries()
            if e.ocmf is not None
            and e.data.get("late") is True
            and not e.data.get("late_published_at")
            and self._ours(e)
        ]

    def never_started(self, transaction_id: str) -> bool:
        """After the meter said it holds no record of a transaction: was it never started?

        True for a start only requested (the module died before the meter's answer, or
        before the request went out) and no longer pending: the meter ran no transaction
        of that id, so there is no record to fetch, now or after the next restart.
        """
        kept = self.kept(transaction_id)
        if kept is None or set(kept.steps) - {Step.START_REQUESTED}:
            return False
        self._pending.pop(transaction_id, None)
        _LOGGER.warning(
            "transaction %s was never started at the meter (its start was requested before "
            "a restart and the meter holds no record of it); nothing to fetch",
            transaction_id,
        )
        self.step(transaction_id, Step.START_REQUESTED, not_started_at_meter=True)
        return True

    @property
    def next_attempt(self) -> float | None:
        """When the earliest pending fetch is due (monotonic), None with nothing pending."""
        return min((p.next_attempt for p in self._pending.values()), default=None)

    def due(self, now: float) -> list[str]:
        """Pending transactions whose next fetch attempt is due."""
        return [tid for tid, p in self._pending.items() if p.next_attempt <= now]

    def failed_again(self, transaction_id: str, now: float) -> float:
        """Back off after another failed fetch; return the new delay."""
        pending = self._pending.get(transaction_id)
        if pending is None:
            return 0.0
        pending.retry += 1
        delay = self._fetch_policy.delay(pending.retry)
        pending.next_attempt = now + delay
        return delay

    @property
    def pending(self) -> list[str]:
        """Transactions stopped at the meter whose record is still to be fetched."""
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
            if Step.START_REQUESTED in e.steps
            and not e.started
            and not e.stopped
            and not e.data.get("not_started_at_meter")
            and self._ours(e)
        ]
        awaiting = [e.transaction_id for e in self._journal.awaiting_record() if self._ours(e)]
        return open_ids + requested, awaiting, set(open_ids)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
