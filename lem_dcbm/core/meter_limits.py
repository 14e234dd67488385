"""The meter's limits (LEM manual 7.2 to 7.8), met before the customer meets them.

- The meter keeps its transaction records in a ring of 20 399 slots and overwrites the
  oldest. A start is refused while it would overwrite a record the journal still waits
  for (a stopped transaction whose record was not fetched yet): that record is the only
  bill of a customer. The ring's size is taken as 20 399 or, when a start does not add
  to ``numberOfStoredTransactions``, as what the meter stores then.
- ``GET /ocmf?transactionId=`` searches only the last 840 transactions; the slot each
  transaction was stored in (``indexOfLastTransaction`` right after its start) is kept in
  the journal, so ``GET /ocmf/{index}`` still finds it later.
- A full logbook (``logbookIsFull``) makes the meter refuse every transaction for good:
  a start is refused without asking, naming it.
- A time sync is valid for 48 h, cannot be made during a transaction, and its expiry
  invalidates a running one. A start whose sync before it failed is refused when the
  sync this module made last expires within ``SESSION_SYNC_MARGIN``; the answer says
  when the next sync is tried. The start answer's ``max_stop_time`` is the expiry.
- The logbook records every clock write, and it never empties: a clock write before every
  start (three settings writes) filled it within 8 000 sessions in the endurance run.
  A start syncs only when the last sync is older than an hour (or due, or invalid), so a
  session still starts with at least 47 h of validity ahead.
- An NTP sync takes up to 30 s and a start aborts it: after writing the NTP settings a
  start waits up to that long for ``timeSyncStatusIsOk``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from lem_dcbm.clock import Clock, rfc3339
from lem_dcbm.errors import ControllerError
from lem_dcbm.meter.models import MeterStatus

#: Transaction slots of the meter (operation manual).
RING_CAPACITY = 20_399
#: How long a time sync stays valid (operation manual).
SYNC_VALIDITY = timedelta(hours=48)
#: A start after a failed sync needs the last sync to stay valid at least this long.
SESSION_SYNC_MARGIN = timedelta(hours=12)
#: A start after a sync younger than this, still valid at the meter, does not sync again.
SYNC_BEFORE_START_AGE = timedelta(hours=1)
#: A meter clock this far from ours is written before a start, however recent the sync.
MAX_CLOCK_DRIFT = timedelta(seconds=2)
#: The longest an NTP answer takes (operation manual).
NTP_ANSWER_S = 30.0
#: How often the status is read while waiting for an NTP sync.
NTP_POLL_S = 1.0
#: Vendor warning sub-type while starts are refused to save unsaved records.
UNSAVED_RECORDS = "MeterRingUnsavedRecords"
#: The journal fact holding a transaction's slot in the meter's ring.
METER_INDEX = "meter_index"


class MeterLimitReached(ControllerError):
    """A start is refused because it would run into a limit of the meter."""


@dataclass(frozen=True, slots=True)
class SyncState:
    """What the module knows about the meter's time sync."""

    #: Monotonic time of the last sync this module made, None when it made none.
    synced_at: float | None
    #: Monotonic time the next sync is tried, None when none is planned.
    next_try: float | None


def parse_meter_time(text: str) -> datetime | None:
    """The meter's ``time`` (ISO 8601 with an offset), None when it does not say one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def wall_time(clock: Clock, monotonic: float) -> datetime:
    """The wall time at monotonic time ``monotonic``."""
    return clock.utc_now() + timedelta(seconds=monotonic - clock.monotonic())


class MeterLimits:
    """Checks a start against the meter's limits; remembers the ring's size once seen."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._capacity = RING_CAPACITY

    @property
    def ring_capacity(self) -> int:
        """The ring's size as known now."""
        return self._capacity

    # -- logbook ------------------------------------------------------------------------------

    def check_logbook(self, status: MeterStatus) -> None:
        """Refuse a start on a meter whose logbook is full."""
        if status.error_bits.get("logbookIsFull"):
            raise MeterLimitReached(
                "the meter's logbook is full (logbookIsFull): the meter refuses every "
                "transaction from now on and must be serviced by LEM; the start was not sent"
            )

    # -- ring ---------------------------------------------------------------------------------

    def check_ring(self, status: MeterStatus, unsaved: Mapping[str, int]) -> None:
        """Refuse a start that would overwrite a record still missing from the journal.

        ``unsaved`` maps each transaction awaiting its record to its slot in the ring.
        """
        stored = status.number_of_stored_transactions
        last = status.index_of_last_transaction
        if stored is None or last is None or stored < self._capacity:
            return
        capacity = max(self._capacity, stored)
        next_index = (last + 1) % capacity
        at_risk = sorted(tid for tid, index in unsaved.items() if index == next_index)
        if at_risk:
            raise MeterLimitReached(
                f"the meter's transaction memory is full ({stored} records) and the next "
                f"start would overwrite the record of {', '.join(at_risk)} (slot {next_index}), "
                "which is not saved yet; starts are refused until it is fetched "
                "(see 'lem-dcbm records list')"
            )

    def started(self, before: MeterStatus, after: MeterStatus) -> int | None:
        """Note a start; return the slot the new transaction took, None if unknown."""
        stored_before = before.number_of_stored_transactions
        stored_after = after.number_of_stored_transactions
        if stored_before and stored_after == stored_before and stored_after < self._capacity:
            # A start that adds no record overwrote one: the ring is full at this size.
            self._capacity = stored_after
        if not after.transaction_ongoing:
            return None
        return after.index_of_last_transaction

    # -- time sync ----------------------------------------------------------------------------

    def expiry(self, sync: SyncState) -> datetime | None:
        """When the last sync this module made expires (wall time), None if it made none."""
        if sync.synced_at is None:
            return None
        return wall_time(self._clock, sync.synced_at) + SYNC_VALIDITY

    def sync_fresh(self, sync: SyncState, status: MeterStatus) -> bool:
        """True when a start needs no sync: a recent one is valid at the meter, none due."""
        now = self._clock.monotonic()
        meter_time = parse_meter_time(status.time)
        if meter_time is not None and abs(meter_time - self._clock.utc_now()) > MAX_CLOCK_DRIFT:
            return False
        return (
            status.time_sync_ok
            and sync.synced_at is not None
            and now - sync.synced_at < SYNC_BEFORE_START_AGE.total_seconds()
            # A write planned within the hour anyway (the one after the settings window)
            # is made now, before the transaction that would block it.
            and (
                sync.next_try is None or sync.next_try > now + SYNC_BEFORE_START_AGE.total_seconds()
            )
        )

    def check_sync(self, sync: SyncState, failure: Exception) -> None:
        """After a failed sync: refuse a start that the sync's expiry would invalidate."""
        expires = self.expiry(sync)
        if expires is None:
            return
        now = self._clock.utc_now()
        if expires - now >= SESSION_SYNC_MARGIN:
            return
        next_try = wall_time(self._clock, sync.next_try) if sync.next_try is not None else now
        raise MeterLimitReached(
            f"the meter's time sync expires at {rfc3339(expires)}, which would invalidate a "
            f"transaction running then, and the clock write failed ({failure}); a start is "
            f"possible once a sync succeeds: the next is tried at {rfc3339(max(next_try, now))} "
            "and before every start"
        )

    def max_stop_time(self, sync: SyncState, latest: datetime) -> datetime:
        """The latest stop: ``latest``, or a minute before the sync expires if earlier."""
        expires = self.expiry(sync)
        if expires is None:
            return latest
        return min(latest, expires - timedelta(minutes=1))

    def await_ntp_sync(
        self,
        status: MeterStatus,
        read_status: Callable[[], MeterStatus],
        sleep: Callable[[float], None],
    ) -> MeterStatus:
        """Wait up to the NTP answer time for ``timeSyncStatusIsOk``: a start would abort it."""
        deadline = self._clock.monotonic() + NTP_ANSWER_S
        while not status.time_sync_ok and self._clock.monotonic() < deadline:
            sleep(NTP_POLL_S)
            status = read_status()
        return status
