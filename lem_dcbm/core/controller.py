"""The meter controller: init, measurements and transactions, as pure logic.

It talks to the meter only through injected ``MeterApi`` clients, every command and
record request through its ``MeterSession`` (``core/meter_session.py``: retries, and the
settling of lost answers), and reads time only from an injected ``Clock``. Commands never
raise: every failure becomes a result with an ``error`` that says what the meter answered.

The meter is the source of truth. Before a command is answered the meter is asked what
runs; a request whose answer was lost (no answer, a 5xx, an unreadable body) is settled by
asking the meter what happened, never by guessing or by sending a start twice. A kept
record answers a stop only after the meter confirmed that the transaction is not running
and that its ring holds that same record (or no longer holds any).

A meter (or mock) without ``GET /legal`` degrades: that is noted once per run, and the
running transaction is then taken from the status bits and from what this module started.
Where settling a lost answer would need ``GET /legal``, the answer's error says so.
Starts are not refused from status bits: the meter decides, and a refusal is explained
with the bits that block.

Threads: commands run on the adapter's command thread, background work (clock sync,
missing records) on the housekeeping thread; both take ``_lock`` (background work only
when it is free), so the command client is used by one thread at a time. A command
waits for at most the one background step in progress: background work stops between
steps as soon as a command waits (``CommandFirstLock``). Measurements use their own client
(``measurements``) and never wait for either.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from lem_dcbm.clock import Clock, rfc3339
from lem_dcbm.core.command_first import CommandFirstLock
from lem_dcbm.core.meter_limits import METER_INDEX, UNSAVED_RECORDS, MeterLimits, SyncState
from lem_dcbm.core.meter_session import NO_GET_LEGAL, MeterSession, Running
from lem_dcbm.core.ownership import RunningTransaction, why_not_ours
from lem_dcbm.core.ports import Alerts, LateRecords, MeterApi, MeterOwners
from lem_dcbm.core.powermeter import powermeter_value
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.record_collector import (
    CollectedRecord,
    IdentityChecks,
    RecordCollector,
    RecordMissing,
    expectation_from,
)
from lem_dcbm.core.record_rider import RecordRider
from lem_dcbm.core.results import (
    PowermeterValue,
    SignedRecord,
    StartResult,
    StopResult,
    TransactionRequest,
)
from lem_dcbm.core.short_session import (
    REFUSED_WINDOW_S,
    STOP_ANSWER_LIMIT_S,
    STOP_RESERVE_S,
    answer_deadline,
    plan_wait,
    wall_elapsed_s,
)
from lem_dcbm.core.timesync import ClockSettings, TimeSync
from lem_dcbm.core.transaction_request import RequestRejected, StartSettings, build_start_body
from lem_dcbm.errors import ControllerError, LemDcbmError, MeterStatusError
from lem_dcbm.meter.models import MeterStatus
from lem_dcbm.records.checks import RecordExpectation, check_record, pagination_of
from lem_dcbm.records.late_record import KeptRecord, verified_now
from lem_dcbm.retry import RetryPolicy
from lem_dcbm.transaction_steps import Step

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

#: The meter's minimum transaction duration (operation manual).
MIN_TRANSACTION_DURATION = timedelta(minutes=2)
#: Pause before a stop the meter refused in the background is tried again.
DEFERRED_STOP_RETRY_S = 10.0
#: Time sync expires 48 h after the last sync; stop a minute before that.
MAX_TRANSACTION_DURATION = timedelta(hours=48) - timedelta(minutes=1)
#: Vendor warning sub-type the controller raises about transactions.
NOT_BILLABLE = "TransactionNotBillable"
#: How often housekeeping asks whether a foreign transaction that refused a start ended.
FOREIGN_CHECK_S = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ControllerSettings:
    """What the controller needs from the module configuration."""

    start: StartSettings
    api_version: str = "auto"  #: "auto" asks the meter, "v1"/"v2" force the API generation
    identification_type: int = -1  #: OCMF IT to keep on the meter, -1 leaves it alone
    transaction_retries: int = 3
    transaction_retry_delay_s: float = 0.25
    signed_start_value: bool = True
    #: Timeout of the 1 Hz measurement read: an unreachable meter is reported within it.
    measurement_timeout_s: float = 2.0
    #: How long a stop may wait for the meter's record before it answers without it.
    stop_record_wait_s: float = 30.0
    #: ``report`` passes on records failing identity checks (simulations and mocks only).
    record_identity_checks: IdentityChecks = "enforce"
    #: The meter's minimum transaction duration (120 s; shorter only for simulators).
    min_transaction_s: float = MIN_TRANSACTION_DURATION.total_seconds()
    #: The longest a stop inside the minimum waits at the meter for it to pass.
    stop_minimum_wait_s: float = 15.0
    #: Whether a stop left unanswered by the module's death is asked again after the restart:
    #: under the EVerest manager a module that dies restarts the stack, and EvseManager asks
    #: for the id it remembers; in API mode nobody asks again, so such a record goes late.
    #: Also whether a stop of a transaction the journal held at start-up is EvseManager's
    #: start-up recovery (see :func:`is_start_up_recovery_stop`).
    unanswered_stop_asked_again: bool = True
    #: Idle seconds a record that no transaction event carries (short session, power-loss
    #: recovery) rides on the ``powermeter`` var for OCPP's aligned meter values; 0: never.
    record_ride_s: float = 0.0

    @property
    def request_policy(self) -> RetryPolicy:
        """Retries of idempotent meter requests (and the settling of lost answers)."""
        return RetryPolicy.constant(self.transaction_retries, self.transaction_retry_delay_s)


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What init learned about the meter."""

    meter_id: str
    public_key_ocmf: str
    firmware_version: str
    api_version: str


class MeterController:
    """Initialises the meter, reads measurements and runs signed transactions."""

    def __init__(
        self,
        meter: MeterApi,
        settings: ControllerSettings,
        clock: Clock,
        timesync: TimeSync,
        *,
        records: RecordBook | None = None,
        alerts: Alerts | None = None,
        late_records: LateRecords | None = None,
        measurements: MeterApi | None = None,
        sleep: Callable[[float], None] | None = None,
        owners: MeterOwners | None = None,
    ) -> None:
        self._measurements = measurements or meter
        self._settings = settings
        self._clock = clock
        self._timesync = timesync
        self._book = records or RecordBook()
        self._alerts = alerts
        self._late = late_records
        self._rider = RecordRider(settings.record_ride_s)
        #: Other modules on this meter, and where a foreign transaction is reported.
        self._owners = owners
        #: The foreign transaction that refused the last start, until it ends (and when to
        #: look again, monotonic).
        self._foreign: str | None = None
        self._foreign_check = 0.0
        self._sleep = sleep or clock.sleep
        #: Every request of the controller to the meter goes through it.
        self._session = MeterSession(
            meter,
            clock,
            settings.request_policy,
            sleep=self._sleep,
            started=lambda: self._running_id,
        )
        #: Commands take it ahead of background work, which gives way to them between steps.
        self._lock = CommandFirstLock()
        self._info: MeterInfo | None = None
        self._running_id: str | None = None
        #: Late records kept before a restart but never published: published by housekeeping.
        self._late_unpublished: list[str] = []
        #: Clock settings changed at run time, handed to the time sync under the lock.
        self._new_clock: ClockSettings | None = None
        #: When this process saw each transaction's start confirmed (monotonic).
        self._started_mono: dict[str, float] = {}
        #: Transactions the journal held unfinished when this process started, and which
        #: this process has not started since (see :func:`is_start_up_recovery_stop`).
        self._held_at_start: set[str] = set()
        #: Stops answered before the meter allowed them: transaction id -> when due.
        self._deferred_stops: dict[str, float] = {}
        #: Set at shutdown: a stop waiting for the minimum duration gives up waiting.
        self._interrupted = threading.Event()
        self._records = RecordCollector(
            self._session,
            clock,
            lambda: self.public_key_ocmf,
            alerts=alerts,
            sleep=self._sleep,
            identity_checks=settings.record_identity_checks,
            slot_of=self._meter_index_of,
        )
        self._limits = MeterLimits(clock)

    @property
    def info(self) -> MeterInfo | None:
        """What init learned, or None before init succeeded."""
        return self._info

    @property
    def public_key_ocmf(self) -> str:
        """The key that verifies this meter's OCMF records ("" before init)."""
        return self._info.public_key_ocmf if self._info else ""

    # -- configuration changed at run time ---------------------------------------------------

    def reconfigure(self, settings: ControllerSettings, clock: ClockSettings) -> None:
        """Use ``settings`` from the next command on, ``clock`` from the next clock sync.

        Never waits for a command in progress. A running transaction keeps what it started
        with: its start request is sent, and the clock is written only while none runs.
        """
        self._settings = settings
        self._session.policy = settings.request_policy
        self._new_clock = clock

    def _take_new_clock(self) -> None:
        """Hand clock settings changed at run time to the time sync (under the lock)."""
        clock, self._new_clock = self._new_clock, None
        if clock is not None:
            self._timesync.reconfigure(clock)

    # -- init ------------------------------------------------------------------------------

    def initialize(self) -> MeterInfo:
        """Ask the meter who it is; raise ``MeterError`` when the required status fails."""
        with self._lock:
            status = self._session.status_once()
            if self._owners is not None:
                # Before any transaction is touched: another module on this meter shows now.
                self._owners.claim(status.meter_id)
            api = self._settings.api_version
            if api == "auto":
                api = self._ask_api_version(status.firmware_version)
            self._session.api_version = api
            self._measurements.api_version = api
            running = self._optional("read the current transaction", self._session.legal)
            if status.transaction_ongoing and running is not None and running.running:
                self._running_id = running.transaction_id
                _LOGGER.warning("a transaction is running at the meter: %s", self._running_id)
            elif status.transaction_ongoing and self._session.legal_missing is not None:
                self._running_id = self._started_by_us()
            self._book.meter_id = status.meter_id
            self._info = MeterInfo(
                meter_id=status.meter_id,
                public_key_ocmf=status.public_key_ocmf,
                firmware_version=status.firmware_version,
                api_version=api,
            )
            self._reconcile(self._running_id)
            self._late_unpublished = self._book.unpublished_late()
            self._optional("check the OCMF identification type", self._ensure_identification_type)
            self._take_new_clock()
            self._timesync.restart_window()
            self._optional("synchronise the meter clock", self._timesync.sync)
            _LOGGER.info(
                "meter %s ready: firmware %s, API %s", status.meter_id, status.firmware_version, api
            )
            return self._info

    def _ask_api_version(self, firmware: str) -> str:
        """Ask the meter whether it serves ``/v2``; guess from the firmware if it won't say."""
        try:
            return "v2" if self._session.supports_v2() else "v1"
        except MeterStatusError as err:
            guess = api_version_from_firmware(firmware)
            _LOGGER.warning(
                "the meter did not say whether it serves /v2 (%s); firmware %s suggests %s",
                err,
                firmware,
                guess,
            )
            return guess

    def _reconcile(self, running_id: str | None) -> None:
        """Match what the journal remembers with what the meter runs now."""
        unfinished, awaiting, started = self._book.unfinished()
        self._held_at_start = {*unfinished, *awaiting}
        now = self._clock.monotonic()
        for transaction_id in unfinished:
            if transaction_id == running_id:
                _LOGGER.info("resuming transaction %s, still running at the meter", transaction_id)
                self._book.step(transaction_id, Step.START_CONFIRMED, resumed=True)
                kept = self._book.kept(transaction_id)
                if kept is not None and kept.facts.get("stop_deferred"):
                    _LOGGER.warning(
                        "transaction %s was to be stopped once the meter allowed it; "
                        "stopping it now",
                        transaction_id,
                    )
                    self._deferred_stops[transaction_id] = now
            else:
                # Stopped while the module was away, or never started: a fetch tells which.
                _LOGGER.warning(
                    "transaction %s is no longer running at the meter; fetching its record",
                    transaction_id,
                )
                if transaction_id in started:
                    self._book.stop_confirmed(transaction_id, found_stopped_at_start_up=True)
                self._book.mark_pending(transaction_id, now, due_now=True)
        for transaction_id in awaiting:
            _LOGGER.warning("record of stopped transaction %s still to be fetched", transaction_id)
            self._book.mark_pending(transaction_id, now, due_now=True)

    def _started_by_us(self) -> str | None:
        """The latest transaction the journal says this module started and did not stop."""
        unfinished, _, started = self._book.unfinished()
        ours = [transaction_id for transaction_id in unfinished if transaction_id in started]
        if ours:
            _LOGGER.warning(
                "the meter runs a transaction it cannot name; taking %s, started by this module",
                ours[-1],
            )
        return ours[-1] if ours else None

    def _optional(self, what: str, action: Callable[[], T]) -> T | None:
        """Run a step init can live without; log its failure and go on."""
        try:
            return action()
        except LemDcbmError as err:
            _LOGGER.warning("could not %s: %s", what, err)
            return None

    def _ensure_identification_type(self) -> None:
        wanted = self._settings.identification_type
        if wanted < 0:
            return
        current = self._session.settings().get("ocmfId", {}).get("IT")
        if current == wanted:
            _LOGGER.info("OCMF identification type already %d", wanted)
            return
        result = self._session.put_settings({"ocmfId": {"IT": wanted}})
        if not result.accepted:
            raise ControllerError("the meter refused the OCMF identification type (result 0)")
        _LOGGER.info("OCMF identification type set to %d (was %s)", wanted, current)

    # -- measurements ------------------------------------------------------------------------

    def read_powermeter(self) -> PowermeterValue:
        """One live measurement; raises ``MeterError``."""
        info = self._info
        if info is None:
            raise ControllerError("the meter is not initialised yet")
        measure = self._measurements.livemeasure(timeout_s=self._settings.measurement_timeout_s)
        riding = self._rider.current(
            self._clock.monotonic(), transaction_running=self._running_id is not None
        )
        return powermeter_value(measure, info.meter_id, self._clock.utc_now(), signed=riding)

    def housekeeping(self, deadline: float | None = None) -> None:
        """Background work: missing records, then the clock sync when due.

        Skipped while a command holds or waits for the controller, and stopped between
        steps as soon as one waits: the command goes first, and the rest runs at the next
        call. ``deadline`` (monotonic) bounds the clock writes.
        """
        if self._info is None:
            return
        with self._lock.background() as taken:
            if taken:
                self._housekeep(deadline)

    def _housekeep(self, deadline: float | None) -> None:
        self._take_new_clock()
        self._run_deferred_stops()
        for transaction_id in self._book.due(self._clock.monotonic()):
            if self.commands_waiting:
                return  # the rest at the next call, after the command
            self._fetch_pending_record(transaction_id)
        while self._late_unpublished and not self.commands_waiting:
            self._publish_kept_late(self._late_unpublished.pop(0))
        # The meter refuses time writes during a transaction.
        if self._running_id is None and not self.commands_waiting:
            self._timesync.sync_if_due(deadline)
        if self._foreign is not None and not self.commands_waiting:
            self._look_at_foreign()

    @property
    def commands_waiting(self) -> int:
        """Commands waiting for the controller (for background work in progress)."""
        return self._lock.commands_waiting

    @property
    def next_background_work(self) -> float | None:
        """When housekeeping next has work (monotonic), None when nothing is planned."""
        if self._info is None:
            return None
        planned = [self._book.next_attempt, *self._deferred_stops.values()]
        if self._late_unpublished:
            planned.append(self._clock.monotonic())
        if self._new_clock is not None:
            planned.append(self._clock.monotonic())
        if self._running_id is None:
            planned.append(self._timesync.next_due)
        if self._foreign is not None:
            planned.append(self._foreign_check)
        return min((due for due in planned if due is not None), default=None)

    def _publish_kept_late(self, transaction_id: str) -> None:
        """Publish a late record the module kept but died before publishing."""
        record = self._book.record_of(transaction_id)
        if record is None:
            return
        try:
            collected = self._records.judge(record, self._expectation(transaction_id))
        except RecordMissing as missing:
            _LOGGER.error("kept late record of %s not published: %s", transaction_id, missing)
            return
        _LOGGER.warning("publishing the late record of %s, kept before a restart", transaction_id)
        self._keep(transaction_id, collected, late=True)

    def _fetch_pending_record(self, transaction_id: str) -> None:
        try:
            collected = self._records.attempt(transaction_id, self._expectation(transaction_id))
        except RecordMissing as missing:
            if missing.unknown and self._book.never_started(transaction_id):
                return
            delay = self._book.failed_again(transaction_id, self._clock.monotonic())
            _LOGGER.warning(
                "record of %s still missing, next try in %.0f s: %s", transaction_id, delay, missing
            )
            return
        owed = self._book.owed(transaction_id) or (
            not self._settings.unanswered_stop_asked_again
            and self._book.died_in_stop(transaction_id)
        )
        self._keep(transaction_id, collected, late=owed)
        if owed:
            _LOGGER.info("record of stopped transaction %s fetched", transaction_id)
            return
        # Exactly once: the stop may have been answered with this record while the journal
        # could not be written; only EvseManager's own stop(id) or an operator resends it.
        _LOGGER.warning(
            "record of stopped transaction %s fetched and kept, not published as late: "
            "nothing shows that its stop went unanswered (the journal could not say); "
            "stop_transaction(%s) is answered with it, 'lem-dcbm records resend %s' "
            "publishes it",
            transaction_id,
            transaction_id,
            transaction_id,
        )

    @property
    def pending_records(self) -> list[str]:
        """Transactions stopped at the meter whose signed record is not fetched yet."""
        return self._book.pending

    # -- asking the meter ----------------------------------------------------------------

    # -- start -------------------------------------------------------------------------------

    def start_transaction(
        self, request: TransactionRequest, *, received_at: float | None = None
    ) -> StartResult:
        """Start a signed transaction.

        ``received_at`` (monotonic): when the start arrived, if it waited before it got here.
        """
        transaction_id = request.transaction_id
        arrival = self._clock.monotonic() if received_at is None else received_at
        with self._lock:
            try:
                return self._start(request, transaction_id, arrival)
            except Exception as err:  # noqa: BLE001 - a command must answer, never crash
                return StartResult(error=self._reason("start", transaction_id, err))

    def _reason(self, verb: str, transaction_id: str, err: Exception) -> str:
        """The answer's text for a failed command, logged once."""
        if isinstance(err, RequestRejected):
            detail = f"request refused before sending: {err}"
        elif isinstance(err, LemDcbmError):
            detail = str(err)
        else:
            _LOGGER.error(
                "%s_transaction %s failed unexpectedly", verb, transaction_id, exc_info=err
            )
            detail = f"internal error: {err!r}"
        return self._failure(verb, transaction_id, detail)

    def _failure(self, verb: str, transaction_id: str, detail: str) -> str:
        message = f"Failed to {verb} transaction {transaction_id}: {detail}"
        _LOGGER.error(message)
        return message

    def _start(
        self, request: TransactionRequest, transaction_id: str, arrival: float
    ) -> StartResult:
        if self._info is None:
            return StartResult(
                error=self._failure("start", transaction_id, "the meter is not initialised yet")
            )
        v2 = self._session.api_version == "v2"
        body = build_start_body(request, self._settings.start, v2=v2)
        status, running = self._session.state()
        self._limits.check_logbook(status)
        if running is not None and running.transaction_id is not None:
            if running.transaction_id == transaction_id:
                # A start repeated after its answer was lost: the meter already runs it.
                _LOGGER.info("transaction %s already runs at the meter", transaction_id)
                self._running_id = transaction_id
                return self._start_answer(transaction_id, confirm=True)
            refused = self._refuse_foreign(running, running.transaction_id, body["evseId"])
            if refused is not None:
                return StartResult(error=self._failure("start", transaction_id, refused))
            self._stop_dangling(running, arrival)
            status = self._session.status()
        self._foreign_ended()
        self._sync_before_start(status)
        if not status.time_sync_ok:
            status = self._session.status()
            if self._timesync.settings.ntp_servers:
                status = self._limits.await_ntp_sync(
                    status,
                    self._session.status,
                    self._sleep,
                )
        self._check_ring(status)
        blocked = start_blockers(status, self._session.legal_missing is not None)
        if blocked:
            # The bits may be wrong (a mock's are): the meter decides, the bits explain.
            _LOGGER.warning(
                "start of %s: the meter's status suggests a refusal (%s); asking it",
                transaction_id,
                "; ".join(blocked),
            )
        self._book.new_session(transaction_id)
        self._held_at_start.discard(transaction_id)  # a session of this process from now on
        sent = {
            "evse_id": body["evseId"],
            "client_id": body["clientId"],
            "tariff_id": body["tariffId"],
            "cable_id": body["cableId"],
            **({"tariff_text": body["TT"]} if v2 else {}),
        }
        previous = self._book.highest_pagination()
        if previous is not None:
            sent["previous_pagination"] = previous
        self._book.step(transaction_id, Step.START_REQUESTED, **sent)
        try:
            self._session.start(body, transaction_id)
        except MeterStatusError as err:
            if blocked and 400 <= err.status < 500:
                raise ControllerError(
                    f"the meter refused the start ({err}); its status says: {'; '.join(blocked)}"
                ) from err
            raise
        self._running_id = transaction_id
        _LOGGER.info("transaction %s started", transaction_id)
        after = self._optional("read the meter status", self._session.status_once)
        slot = self._limits.started(status, after) if after is not None else None
        return self._start_answer(transaction_id, confirm=True, meter_index=slot)

    def _check_ring(self, status: MeterStatus) -> None:
        """Refuse a start that would overwrite a record the journal still waits for."""
        unsaved: dict[str, int] = {}
        for transaction_id in self._book.pending:
            slot = self._meter_index_of(transaction_id)
            if slot is not None:
                unsaved[transaction_id] = slot
        try:
            self._limits.check_ring(status, unsaved)
        except LemDcbmError as err:
            if self._alerts is not None:
                self._alerts.warn(UNSAVED_RECORDS, str(err))
            raise
        self._clear_alert(UNSAVED_RECORDS)

    def _meter_index_of(self, transaction_id: str) -> int | None:
        """The ring slot the journal noted for a transaction at its start, if any."""
        kept = self._book.kept(transaction_id)
        slot = kept.facts.get(METER_INDEX) if kept is not None else None
        return slot if isinstance(slot, int) and not isinstance(slot, bool) else None

    def _sync_state(self) -> SyncState:
        return SyncState(self._timesync.synced_at, self._timesync.next_due)

    def _sync_before_start(self, status: MeterStatus) -> None:
        self._take_new_clock()
        if self._limits.sync_fresh(self._sync_state(), status):
            return  # each clock write costs an entry of the meter's logbook
        try:
            self._timesync.sync()
        except LemDcbmError as err:
            if status.time_sync_ok:
                self._limits.check_sync(self._sync_state(), err)
                _LOGGER.warning("clock sync before start failed, time sync still valid: %s", err)
            else:
                raise ControllerError(
                    f"the meter's time sync is invalid and could not be fixed: {err}"
                ) from err

    def _start_answer(
        self, transaction_id: str, *, confirm: bool, meter_index: int | None = None
    ) -> StartResult:
        now = self._clock.utc_now()
        begin = None
        facts: dict[str, Any] = {"started_at": rfc3339(now)}
        if meter_index is not None:
            facts[METER_INDEX] = meter_index
        if self._settings.signed_start_value:
            begin = self._begin_record(transaction_id, facts)
        if confirm:
            self._book.step(transaction_id, Step.START_CONFIRMED, **facts)
            self._started_mono.setdefault(transaction_id, self._clock.monotonic())
        return StartResult(
            min_stop_time=now + timedelta(seconds=self._settings.min_transaction_s),
            max_stop_time=self._limits.max_stop_time(
                self._sync_state(), now + MAX_TRANSACTION_DURATION
            ),
            begin_record=begin,
        )

    def _begin_record(self, transaction_id: str, facts: dict[str, Any]) -> SignedRecord | None:
        """The running transaction's begin record, if it is this transaction's and reads."""
        try:
            record = self._session.ocmf(transaction_id)
        except LemDcbmError as err:
            _LOGGER.warning("begin record of %s not available: %s", transaction_id, err)
            return None
        kept = self._book.kept(transaction_id)
        expected = expectation_from(kept.facts if kept else {}, self._meter_id)
        verdict = check_record(record, expected, self.public_key_ocmf or None)
        ignored = {"readings", "order"}  # a begin record has no end reading yet
        failed = [f for f in verdict.failures if f.check not in ignored]
        if failed:
            named = "; ".join(f"{f.check}: {f.detail}" for f in failed)
            if self._settings.record_identity_checks == "enforce":
                _LOGGER.error("begin record of %s not passed on: %s", transaction_id, named)
                return None
            _LOGGER.error(
                "begin record of %s fails checks: %s (passed on because record_identity_checks "
                "is 'report', for simulations only)",
                transaction_id,
                named,
            )
        pagination = pagination_of(record)
        if pagination is not None:
            facts["pagination"] = pagination
        return SignedRecord(record, self.public_key_ocmf)

    def _not_ours(self, running: Running, transaction_id: str, evse_id: str | None) -> str | None:
        """Why the running ``transaction_id`` may not be stopped here (see ``ownership``)."""
        kept = self._book.kept(transaction_id)
        held = kept.facts if kept is not None and not kept.finished else None
        others = self._owners.others() if self._owners is not None else ()
        return why_not_ours(
            RunningTransaction(transaction_id, running.evse_id, running.client_id),
            held=held,
            evse_id=evse_id,
            other_modules=others,
        )

    def _refuse_foreign(self, running: Running, transaction_id: str, evse_id: str) -> str | None:
        """The refusal of a start blocked by a foreign transaction (raised); None if ours."""
        reason = self._not_ours(running, transaction_id, evse_id)
        if reason is None:
            return None
        message = (
            f"the meter runs {_described(running, transaction_id)}, which is not this "
            f"module's ({reason}); it is left running and starts are refused until it ends: "
            "its owner stops it, or an operator with "
            f"'lem-dcbm meter stop-foreign --transaction-id {transaction_id}'"
        )
        self._foreign = transaction_id
        self._foreign_check = self._clock.monotonic() + FOREIGN_CHECK_S
        if self._owners is not None:
            self._owners.foreign_transaction(message)
        return message

    def _foreign_ended(self) -> None:
        """The foreign transaction that refused a start no longer runs: clear the error."""
        if self._foreign is None:
            return
        _LOGGER.info("foreign transaction %s no longer runs at the meter", self._foreign)
        self._foreign = None
        if self._owners is not None:
            self._owners.foreign_transaction(None)

    def _look_at_foreign(self) -> None:
        """Housekeeping: has the foreign transaction ended? Asked every ``FOREIGN_CHECK_S``."""
        if self._clock.monotonic() < self._foreign_check:
            return
        self._foreign_check = self._clock.monotonic() + FOREIGN_CHECK_S
        try:
            running = self._session.running()
        except LemDcbmError as err:
            _LOGGER.debug("could not ask whether the foreign transaction ended: %s", err)
            return
        if running is None or running.transaction_id != self._foreign:
            self._foreign_ended()

    def _stop_dangling(self, running: Running, arrival: float) -> None:
        """Stop what runs before a start; within the meter's minimum, wait if there is time."""
        transaction_id = running.transaction_id or ""
        _LOGGER.warning("stopping transaction %s left running at the meter", transaction_id)
        try:
            self._stop_unasked(transaction_id)
            return
        except MeterStatusError as refused:
            minimum = self._settings.min_transaction_s
            elapsed = self._elapsed_s(transaction_id, running)
            if not 400 <= refused.status < 500 or elapsed is None or elapsed >= minimum:
                raise
            plan = plan_wait(
                elapsed,
                minimum_s=minimum,
                allowed_s=self._settings.stop_minimum_wait_s,
                spent_s=self._clock.monotonic() - arrival,
            )
            if plan.deferred:
                raise ControllerError(
                    f"transaction {transaction_id} still runs at the meter, which refuses to "
                    f"stop it before its minimum duration of {minimum:g} s (it ran "
                    f"{elapsed:.0f} s; waiting {plan.wait_s:.0f} s is longer than a command "
                    f"may wait): {refused}"
                ) from refused
            _LOGGER.info(
                "transaction %s ran %.0f s, within the meter's minimum transaction duration "
                "of %g s: waiting %.0f s, then stopping it",
                transaction_id,
                elapsed,
                minimum,
                plan.wait_s,
            )
            if self._clock.wait(self._interrupted, plan.wait_s):
                raise ControllerError("the module is shutting down") from refused
        refused_until = self._clock.monotonic() + REFUSED_WINDOW_S
        self._stop_unasked(transaction_id, refused_until=refused_until)

    def _stop_unasked(self, transaction_id: str, *, refused_until: float | None = None) -> None:
        """Stop a transaction nobody waits for; its record goes the late road."""
        self._book.owe(transaction_id)  # nobody asks for this record
        self._stop_at_meter(transaction_id, deadline=None, refused_until=refused_until)
        try:
            collected = self._records.attempt(transaction_id, self._expectation(transaction_id))
        except RecordMissing as missing:
            _LOGGER.error(
                "record of the dangling transaction %s not fetched yet: %s", transaction_id, missing
            )
            self._book.mark_pending(transaction_id, self._clock.monotonic())
            return
        # Nobody asked for this record: it reaches backends only by the late road.
        self._keep(transaction_id, collected, late=True)

    # -- stop --------------------------------------------------------------------------------

    def stop_transaction(
        self, transaction_id: str, *, received_at: float | None = None
    ) -> StopResult:
        """Stop a transaction and hand out its signed record.

        ``received_at`` (monotonic) is when the stop arrived, if it waited before it got
        here: the time limits of the stop count from then.
        """
        arrival = self._clock.monotonic() if received_at is None else received_at
        with self._lock:
            try:
                return self._stop(transaction_id, arrival)
            except Exception as err:  # noqa: BLE001 - a command must answer, never crash
                return StopResult(error=self._reason("stop", transaction_id, err))

    def interrupt_waits(self) -> None:
        """Shutdown: a stop waiting for the meter's minimum duration stops waiting."""
        self._interrupted.set()

    def _stop(self, transaction_id: str, arrival: float) -> StopResult:
        if self._info is None:
            return StopResult(
                error=self._failure("stop", transaction_id, "the meter is not initialised yet")
            )
        record_wait = self._settings.stop_record_wait_s
        deadline = answer_deadline(arrival, self._clock.monotonic(), record_wait)
        running = self._session.running(deadline)
        if transaction_id == "":
            if running is None:
                self._running_id = None
                return StopResult(error="no transaction running")
            if running.transaction_id is None:
                return StopResult(
                    error=self._failure(
                        "stop",
                        "",
                        f"the meter runs a transaction, {NO_GET_LEGAL} to say which, and this "
                        "module started none",
                    )
                )
            transaction_id = running.transaction_id
            reason = self._not_ours(running, transaction_id, evse_id=None)
            if reason is not None:
                # EvseManager's boot-time clean-up: never another EVSE's session. One of
                # this EVSE's own whose journal was lost is stopped by this EVSE's next start.
                described = _described(running, transaction_id)
                return StopResult(
                    error=self._failure(
                        "stop",
                        "",
                        f"the meter runs {described}, which is not stopped: {reason}",
                    )
                )
        kept = self._book.kept(transaction_id)
        unnamed = running is not None and running.transaction_id is None
        if running is not None and (
            running.transaction_id == transaction_id
            # The meter cannot say what runs: it decides whether this id is one to stop.
            or (unnamed and not (kept is not None and kept.finished))
        ):
            try:
                self._stop_at_meter(transaction_id, deadline)
            except MeterStatusError as refused:
                if not 400 <= refused.status < 500:
                    raise
                deferred = self._stop_after_minimum(transaction_id, running, arrival, refused)
                if deferred is not None:
                    return deferred
                deadline = answer_deadline(arrival, self._clock.monotonic(), record_wait)
        elif kept is None and transaction_id not in self._book.pending:
            return self._stop_unknown(transaction_id)
        # What the record must say was kept at the start: the stop adds nothing to it.
        expected = expectation_from(kept.facts if kept else {}, self._meter_id)
        try:
            collected = self._records.wait(transaction_id, expected, deadline)
        except RecordMissing as missing:
            held = self._kept_record(transaction_id, expected) if missing.unknown else None
            if held is None:
                return self._record_late(transaction_id, missing)
            _LOGGER.warning(
                "the meter no longer holds the record of %s; answering with the kept copy",
                transaction_id,
            )
            collected = held
        self._keep(transaction_id, collected, late=False, answered=True)
        if is_start_up_recovery_stop(
            transaction_id, self._held_at_start, self._settings.unanswered_stop_asked_again
        ):
            self._publish_recovered(transaction_id, collected)
        return self._stop_answer(transaction_id, collected.record)

    def _stop_unknown(self, transaction_id: str) -> StopResult:
        """A stop for an id this module never ran: one question to the meter settles it."""
        expected = RecordExpectation(meter_id=self._meter_id or None)
        try:
            collected = self._records.attempt(transaction_id, expected)
        except RecordMissing as missing:
            return StopResult(
                error=self._failure(
                    "stop",
                    transaction_id,
                    f"the transaction is not running, and neither the meter nor the journal "
                    f"holds a record for it ({missing})",
                )
            )
        self._keep(transaction_id, collected, late=False, answered=True)
        return self._stop_answer(transaction_id, collected.record)

    def _kept_record(
        self, transaction_id: str, expected: RecordExpectation
    ) -> CollectedRecord | None:
        record = self._book.record_of(transaction_id)
        if record is None:
            return None
        try:
            return self._records.judge(record, expected)
        except RecordMissing:
            return None

    def _record_late(self, transaction_id: str, missing: RecordMissing) -> StopResult:
        self._book.owe(transaction_id)
        self._book.mark_pending(transaction_id, self._clock.monotonic())
        where = self._late.where(transaction_id) if self._late is not None else "the journal"
        return StopResult(
            error=self._failure(
                "stop",
                transaction_id,
                f"the transaction is stopped at the meter, but its signed record could not be "
                f"had within {self._settings.stop_record_wait_s:g} s ({missing}); it is kept, "
                f"fetched in the background and then published on {where} "
                "(and listed by 'lem-dcbm records list')",
            )
        )

    def _elapsed_s(self, transaction_id: str, running: Running) -> float | None:
        """How long ``transaction_id`` has run: the meter's count, ours, or the journal's."""
        if running.elapsed_s is not None:
            return running.elapsed_s
        started = self._started_mono.get(transaction_id)
        if started is not None:
            return self._clock.monotonic() - started
        kept = self._book.kept(transaction_id)
        started_at = kept.facts.get("started_at") if kept is not None else None
        return wall_elapsed_s(_text(started_at), self._clock.utc_now())

    def _stop_after_minimum(
        self, transaction_id: str, running: Running, arrival: float, refused: MeterStatusError
    ) -> StopResult | None:
        """The meter refused the stop: wait for its minimum duration, then stop again.

        Returns None once stopped, or the answer when the stop moved to the background
        (the wait too long, shutdown, still refused after it). Raises ``refused`` when the
        transaction is older than the minimum: then the refusal has another cause.
        """
        minimum = self._settings.min_transaction_s
        elapsed = self._elapsed_s(transaction_id, running)
        if elapsed is not None and elapsed >= minimum:
            raise refused
        plan = plan_wait(
            elapsed,
            minimum_s=minimum,
            allowed_s=self._settings.stop_minimum_wait_s,
            spent_s=self._clock.monotonic() - arrival,
        )
        ran = f"{elapsed:.0f} s" if elapsed is not None else "an unknown time"
        if elapsed is None:
            return self._defer_stop(
                transaction_id, ran, minimum, f"the stop was refused ({refused})"
            )
        if plan.deferred:
            return self._defer_stop(
                transaction_id,
                ran,
                plan.wait_s,
                f"waiting {plan.wait_s:.0f} s is longer than the stop may wait "
                f"(stop_minimum_wait_ms {self._settings.stop_minimum_wait_s * 1000:.0f}, "
                "and EvseManager gives up on its lock after 120 s)",
            )
        _LOGGER.info(
            "stop of %s refused after %s, within the meter's minimum transaction duration "
            "of %g s: waiting %.0f s, then stopping it",
            transaction_id,
            ran,
            minimum,
            plan.wait_s,
        )
        if self._clock.wait(self._interrupted, plan.wait_s):
            return self._defer_stop(transaction_id, ran, 0.0, "the module is shutting down")
        now = self._clock.monotonic()
        refused_until = min(now + REFUSED_WINDOW_S, arrival + STOP_ANSWER_LIMIT_S - STOP_RESERVE_S)
        deadline = answer_deadline(arrival, now, self._settings.stop_record_wait_s)
        try:
            self._stop_at_meter(transaction_id, deadline, refused_until=refused_until)
        except MeterStatusError as again:
            if not 400 <= again.status < 500:
                raise
            return self._defer_stop(
                transaction_id,
                ran,
                DEFERRED_STOP_RETRY_S,
                f"the meter still refused the stop after the wait ({again})",
            )
        return None

    def _defer_stop(self, transaction_id: str, ran: str, wait_s: float, reason: str) -> StopResult:
        """Answer now; stop at the meter once it allows it and send the record late."""
        self._deferred_stops[transaction_id] = self._clock.monotonic() + wait_s
        self._book.step(transaction_id, Step.STOP_REQUESTED, stop_deferred=True)
        where = self._late.where(transaction_id) if self._late is not None else "the journal"
        return StopResult(
            error=self._failure(
                "stop",
                transaction_id,
                f"the meter refuses to stop a transaction before its minimum duration of "
                f"{self._settings.min_transaction_s:g} s and this one ran {ran}; {reason}. "
                f"The module stops it in about {wait_s:.0f} s and publishes its signed "
                f"record on {where} (and lists it in 'lem-dcbm records list')",
            )
        )

    def _run_deferred_stops(self) -> None:
        """Housekeeping: stop the transactions whose stop had to wait for the minimum."""
        now = self._clock.monotonic()
        for transaction_id, due in list(self._deferred_stops.items()):
            if due > now or self.commands_waiting:
                continue
            try:
                running = self._session.running()
                if running is None or running.transaction_id not in (transaction_id, None):
                    # Stopped meanwhile (by the meter or another stop): fetch its record.
                    del self._deferred_stops[transaction_id]
                    self._book.mark_pending(transaction_id, now, due_now=True)
                    continue
                _LOGGER.info(
                    "stopping transaction %s, whose stop had to wait for the meter's minimum "
                    "duration",
                    transaction_id,
                )
                self._stop_unasked(transaction_id)
            except LemDcbmError as err:
                self._deferred_stops[transaction_id] = now + DEFERRED_STOP_RETRY_S
                _LOGGER.warning(
                    "deferred stop of %s failed, trying again in %g s: %s",
                    transaction_id,
                    DEFERRED_STOP_RETRY_S,
                    err,
                )

    def _stop_at_meter(
        self, transaction_id: str, deadline: float | None, *, refused_until: float | None = None
    ) -> None:
        """``PUT /legal``; a lost answer is settled by asking the meter whether it stopped.

        Until ``refused_until`` (monotonic), a refusal still means the meter's minimum
        duration has not quite passed: the stop is sent again a moment later.
        """
        self._book.step(transaction_id, Step.STOP_REQUESTED)
        status = self._session.stop(transaction_id, deadline, refused_until=refused_until)
        facts: dict[str, Any] = {"stopped_at": rfc3339(self._clock.utc_now())}
        if status is not None:
            facts["transaction_status"] = status
        self._book.stop_confirmed(transaction_id, **facts)
        self._deferred_stops.pop(transaction_id, None)
        self._started_mono.pop(transaction_id, None)
        if self._running_id == transaction_id:
            self._running_id = None
        _LOGGER.info("transaction %s stopped at the meter", transaction_id)
        if status is not None:
            self._report_billable(transaction_id, status)

    # -- records -----------------------------------------------------------------------------

    @property
    def _meter_id(self) -> str:
        return self._info.meter_id if self._info else ""

    def _expectation(self, transaction_id: str) -> RecordExpectation:
        kept = self._book.kept(transaction_id)
        return expectation_from(kept.facts if kept else {}, self._meter_id)

    def _keep(
        self, transaction_id: str, collected: CollectedRecord, *, late: bool, answered: bool = False
    ) -> None:
        """Store a taken record; a late one also goes out on the late-record road.

        ``answered``: a stop's answer carries it (noted, so a resend says so too).
        """
        fetched_at = rfc3339(self._clock.utc_now())
        self._book.store_record(
            transaction_id,
            collected.record,
            public_key_ocmf=self.public_key_ocmf,
            verdict=collected.verdict_facts(),
            fetched_at=fetched_at,
            late=late,
            **({"answered": True} if answered else {}),
        )
        if late:
            self._publish_late(transaction_id, collected, fetched_at, answered=False)

    def _publish_recovered(self, transaction_id: str, collected: CollectedRecord) -> None:
        """The record answered to EvseManager's start-up recovery stop also goes late, once."""
        self._held_at_start.discard(transaction_id)
        kept = self._book.kept(transaction_id)
        if kept is not None and kept.facts.get("late_published_at"):
            return  # already on the late road (it was owed): once is enough
        fetched_at = _text(kept.facts.get("fetched_at")) if kept is not None else None
        _LOGGER.warning(
            "stop of %s is EvseManager's start-up recovery: OCPP does not end that transaction "
            "with its record, so the record also goes on the late-record road, marked answered",
            transaction_id,
        )
        self._publish_late(
            transaction_id, collected, fetched_at or rfc3339(self._clock.utc_now()), answered=True
        )

    def _publish_late(
        self, transaction_id: str, collected: CollectedRecord, fetched_at: str, *, answered: bool
    ) -> None:
        if self._late is None:
            return
        kept = self._book.kept(transaction_id)
        facts = kept.facts if kept else {}
        record = KeptRecord(
            transaction_id=transaction_id,
            meter_id=self._meter_id,
            ocmf=collected.record,
            public_key_ocmf=self.public_key_ocmf,
            signature_valid=collected.verdict.signature_valid,
            failed_checks=collected.verdict.failures,
            started_at=_text(facts.get("started_at")),
            stopped_at=_text(facts.get("stopped_at")),
            fetched_at=fetched_at,
            expected=expectation_from(facts, self._meter_id),
            answered=answered,
        )
        if self._late.publish(record):
            self._book.note(transaction_id, late_published_at=rfc3339(self._clock.utc_now()))
        self._ride(record)

    def _ride(self, record: KeptRecord) -> None:
        """Put a record no transaction event carries on the powermeter var, if it verifies now."""
        if not self._rider.enabled:
            return
        checked = verified_now(record)
        if checked.signature_valid is not True or checked.failed_checks:
            _LOGGER.warning(
                "record of %s not put on the powermeter var: it does not verify now",
                record.transaction_id,
            )
            return
        self._rider.carry(
            record.transaction_id,
            SignedRecord(record.ocmf, record.public_key_ocmf),
            self._clock.monotonic(),
        )

    def _report_billable(self, transaction_id: str, status: int) -> None:
        if status == BILLABLE_STATUS:
            self._clear_alert(NOT_BILLABLE)
            return
        message = (
            f"transaction {transaction_id} is not billable: the meter reports transaction "
            f"status {status} (17 expected); the meter saw a problem during the transaction"
        )
        _LOGGER.warning(message)
        if self._alerts is not None:
            self._alerts.warn(NOT_BILLABLE, message)

    def _clear_alert(self, sub_type: str) -> None:
        if self._alerts is not None:
            self._alerts.clear(sub_type)

    def _stop_answer(self, transaction_id: str, record: str) -> StopResult:
        _LOGGER.info("signed record of transaction %s returned", transaction_id)
        return StopResult(record=SignedRecord(record, self.public_key_ocmf))


#: ``meterValue.transactionStatus`` of a transaction the meter saw nothing wrong in.
BILLABLE_STATUS = 17


def is_start_up_recovery_stop(
    transaction_id: str, held_at_start: Set[str], unanswered_stop_asked_again: bool
) -> bool:
    """Whether a stop can only be EvseManager's start-up recovery after a power loss.

    At boot EvseManager stops the transaction it remembers (``stop_transaction(id)``) and
    ends it with ``TransactionFinished(PowerLoss)``, but OCPP 2.0.1 does not end that
    transaction at the CSMS with the record: answered only there, the bill reaches nobody.
    Under the EVerest manager (``unanswered_stop_asked_again``) a module that dies takes
    the whole stack down, so a stop naming a transaction this process did not start, one
    the journal held unfinished when it started (``held_at_start``), comes from that
    recovery. In API mode the module restarts alone and the inference does not hold.
    """
    return unanswered_stop_asked_again and transaction_id in held_at_start


def _described(running: Running, transaction_id: str) -> str:
    return RunningTransaction(transaction_id, running.evse_id, running.client_id).describe()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def api_version_from_firmware(version: str) -> str:
    """Guess the API generation from ``applicationFirmwareVersion`` (e.g. ``MU-2.3.0.1``).

    Only a fallback: which firmware serves ``/v2`` is not documented, so the meter is
    asked first. Versions are compared as numbers, not text: ``MU-10.0`` is newer than
    ``MU-2.3``. Major version 2 and later is taken for ``/v2``.
    """
    numbers = [int(part) for part in re.findall(r"\d+", version.split("_")[0])]
    return "v2" if numbers and numbers[0] >= 2 else "v1"


def start_blockers(status: MeterStatus, unnamed_running: bool = False) -> list[str]:
    """Why the meter's status bits say it would refuse a start now (empty: it would not).

    ``unnamed_running``: the meter cannot say which transaction runs (no ``GET /legal``),
    so a running one shown by the bits is one this module did not start.
    """
    blocked = []
    if not status.sensor_link_ok:
        blocked.append("the meter's sensor link is down (suLinkStatusIsOk false)")
    if status.fatal_error:
        blocked.append("the meter reports a fatal error (muFatalErrorOccured)")
    if not status.time_sync_ok:
        blocked.append("the meter's time sync is invalid (timeSyncStatusIsOk false)")
    if unnamed_running and status.transaction_ongoing:
        blocked.append(f"a transaction is running (transactionIsOnGoing) and {NO_GET_LEGAL}")
    return blocked
