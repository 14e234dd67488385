"""Records that ride on the ``powermeter`` var to reach the CSMS by OCPP's idle meter values.

Two records never reach the CSMS through the transaction events, however well the stop
went: the record of a stop answered before the meter allowed it (a session shorter than
the meter's 2-minute minimum, its record fetched later) and the record answered to
EvseManager's start-up recovery stop after a power loss (EvseManager ends that
transaction without a TransactionEvent). Both go on the late-record road for the
operator. Under OCPP 2.0.1 they can also reach the CSMS: libocpp keeps the latest
``powermeter`` value of an idle EVSE and, at every clock-aligned interval
(``AlignedDataCtrlr.Interval``, 900 s as EVerest ships it), sends it in a MeterValues
request whose ``Energy.Active.Import.Register`` carries the value's ``signed_meter_value``
unchanged. So such a record is attached to the publications while no transaction runs,
for as long as one aligned interval needs to pass (idle time only: a running transaction
pauses the ride, so no record rides in another transaction's meter values).

Rides are kept in memory only: a restart ends them, and the record stays on the late
road. One record rides at a time, the others wait their turn (bounded).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from lem_dcbm.core.results import SignedRecord

_LOGGER = logging.getLogger(__name__)

#: Records waiting to ride; more are dropped from this road (they stay on the late road).
MAX_WAITING = 32


@dataclass(slots=True)
class _Ride:
    transaction_id: str
    record: SignedRecord
    #: Idle seconds still to ride.
    left_s: float


class RecordRider:
    """Which record, if any, the next ``powermeter`` publication carries.

    ``ride_s`` is the idle time each record rides; 0 switches the road off. Time is the
    caller's monotonic clock, passed to every call, so tests control it.
    """

    def __init__(self, ride_s: float) -> None:
        self._ride_s = ride_s
        self._lock = threading.Lock()
        self._rides: deque[_Ride] = deque()
        #: Monotonic time of the last call that counted idle time; None while paused.
        self._since: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether records ride at all."""
        return self._ride_s > 0

    def carry(self, transaction_id: str, record: SignedRecord, now: float) -> None:
        """Queue ``record`` for a ride of ``ride_s`` idle seconds."""
        if not self.enabled:
            return
        with self._lock:
            if any(ride.transaction_id == transaction_id for ride in self._rides):
                return
            if len(self._rides) >= MAX_WAITING:
                _LOGGER.warning(
                    "record of %s not put on the powermeter var: %d records wait already; "
                    "it stays on the late-record road",
                    transaction_id,
                    MAX_WAITING,
                )
                return
            self._rides.append(_Ride(transaction_id, record, self._ride_s))
            waiting = len(self._rides) - 1
        _LOGGER.info(
            "record of %s rides on the powermeter var for %g s of idle time%s, so OCPP's "
            "clock-aligned meter values can take it to the CSMS",
            transaction_id,
            self._ride_s,
            f" after {waiting} other(s)" if waiting else "",
        )

    def current(self, now: float, *, transaction_running: bool) -> SignedRecord | None:
        """The record the publication at ``now`` carries; None during a transaction."""
        with self._lock:
            if transaction_running:
                self._since = None
                return None
            since, self._since = self._since, now
            if since is not None and self._rides:
                self._rides[0].left_s -= max(0.0, now - since)
            while self._rides and self._rides[0].left_s <= 0:
                done = self._rides.popleft()
                _LOGGER.info(
                    "record of %s no longer rides on the powermeter var", done.transaction_id
                )
            return self._rides[0].record if self._rides else None

    @property
    def riding(self) -> list[str]:
        """The transaction ids whose records ride or wait to, in order."""
        with self._lock:
            return [ride.transaction_id for ride in self._rides]
