"""The meter controller: init, measurements and transactions, as pure logic.

It talks to the meter only through an injected ``MeterApi`` and reads time only from an
injected ``Clock``. Commands never raise: every failure becomes an ``UNEXPECTED_ERROR``
answer whose text says what the meter answered.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lem_dcbm.clock import Clock, rfc3339
from lem_dcbm.core import responses
from lem_dcbm.core.ports import Alerts, MeterApi
from lem_dcbm.core.powermeter import to_powermeter
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import RequestRejected, StartSettings, build_start_body
from lem_dcbm.errors import LemDcbmError, MeterConnectionError, MeterError, MeterStatusError
from lem_dcbm.meter.models import MeterStatus
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from lem_dcbm.retry import call_with_retry

_LOGGER = logging.getLogger(__name__)

#: The meter's minimum transaction duration (operation manual).
MIN_TRANSACTION_DURATION = timedelta(minutes=2)
#: Time sync expires 48 h after the last sync; stop a minute before that.
MAX_TRANSACTION_DURATION = timedelta(hours=48) - timedelta(minutes=1)
#: Vendor warning sub-types the controller raises.
SIGNATURE_INVALID = "OcmfSignatureInvalid"
NOT_BILLABLE = "TransactionNotBillable"


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


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What init learned about the meter."""

    meter_id: str
    public_key_ocmf: str
    firmware_version: str
    api_version: str
    transaction_running: bool
    last_transaction_id: str | None = field(default=None)


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
        verify: Callable[[str, str], bool] = verify_ocmf,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._meter = meter
        self._settings = settings
        self._clock = clock
        self._timesync = timesync
        self._book = records or RecordBook()
        self._alerts = alerts
        self._verify = verify
        self._sleep = sleep or clock.sleep
        self._lock = threading.RLock()
        self._info: MeterInfo | None = None
        self._running_id: str | None = None

    @property
    def info(self) -> MeterInfo | None:
        """What init learned, or None before init succeeded."""
        return self._info

    @property
    def public_key_ocmf(self) -> str:
        """The key that verifies this meter's OCMF records ("" before init)."""
        return self._info.public_key_ocmf if self._info else ""

    # -- init ------------------------------------------------------------------------------

    def initialize(self) -> MeterInfo:
        """Ask the meter who it is; raise ``MeterError`` when the required status fails."""
        with self._lock:
            status = self._meter.status()
            api = self._settings.api_version
            if api == "auto":
                api = self._ask_api_version(status.firmware_version)
            self._meter.api_version = api
            last_id = self._optional("read the current transaction", self._current_transaction_id)
            if status.transaction_ongoing and last_id:
                self._running_id = last_id
                _LOGGER.warning("a transaction is running at the meter: %s", last_id)
            self._book.meter_id = status.meter_id
            self._reconcile(self._running_id)
            self._optional("check the OCMF identification type", self._ensure_identification_type)
            self._timesync.restart_window()
            self._optional("synchronise the meter clock", self._timesync.sync)
            self._info = MeterInfo(
                meter_id=status.meter_id,
                public_key_ocmf=status.public_key_ocmf,
                firmware_version=status.firmware_version,
                api_version=api,
                transaction_running=status.transaction_ongoing,
                last_transaction_id=last_id,
            )
            _LOGGER.info(
                "meter %s ready: firmware %s, API %s", status.meter_id, status.firmware_version, api
            )
            return self._info

    def _ask_api_version(self, firmware: str) -> str:
        """Ask the meter whether it serves ``/v2``; guess from the firmware if it won't say."""
        try:
            return "v2" if self._meter.supports_v2() else "v1"
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
        now = self._clock.monotonic()
        for transaction_id in unfinished:
            if transaction_id == running_id:
                _LOGGER.info("resuming transaction %s, still running at the meter", transaction_id)
                self._book.step(transaction_id, "start_confirmed", resumed=True)
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

    def _optional(self, what: str, action: Callable[[], Any]) -> Any:
        """Run a step init can live without; log its failure and go on."""
        try:
            return action()
        except LemDcbmError as err:
            _LOGGER.warning("could not %s: %s", what, err)
            return None

    def _current_transaction_id(self) -> str:
        return self._meter.legal().transaction_id

    def _ensure_identification_type(self) -> None:
        wanted = self._settings.identification_type
        if wanted < 0:
            return
        current = self._meter.settings().get("ocmfId", {}).get("IT")
        if current == wanted:
            _LOGGER.info("OCMF identification type already %d", wanted)
            return
        result = self._meter.put_settings({"ocmfId": {"IT": wanted}})
        if not result.accepted:
            raise MeterError(
                "PUT", "/v1/settings", "the meter refused the OCMF identification type"
            )
        _LOGGER.info("OCMF identification type set to %d (was %s)", wanted, current)

    # -- measurements ------------------------------------------------------------------------

    def read_powermeter(self) -> dict[str, Any]:
        """One live measurement as the EVerest ``powermeter`` var; raises ``MeterError``."""
        info = self._info
        if info is None:
            raise MeterConnectionError("GET", "/livemeasure", "the meter is not initialised yet")
        measure = self._meter.livemeasure(timeout_s=self._settings.measurement_timeout_s)
        return to_powermeter(measure, info.meter_id, self._clock.utc_now())

    def housekeeping(self, deadline: float | None = None) -> None:
        """Periodic work after a publication: clock sync, missing records.

        ``deadline`` (monotonic) is the next publication: the clock sync stops before it.
        """
        if self._info is None:
            return
        self._fetch_pending_records()
        if self._running_id is None:  # the meter refuses time writes during a transaction
            self._timesync.sync_if_due(deadline)

    def _fetch_pending_records(self) -> None:
        due = self._book.due(self._clock.monotonic())
        # A command holds the lock: try again next cycle rather than delay a publication.
        if not due or not self._lock.acquire(blocking=False):
            return
        try:
            for transaction_id in due:
                self._fetch_pending_record(transaction_id)
        finally:
            self._lock.release()

    def _fetch_pending_record(self, transaction_id: str) -> None:
        if self._book.record_of(transaction_id) is not None:
            return
        try:
            record = self._fetch_record(transaction_id, retries=0)
        except LemDcbmError as err:
            delay = self._book.failed_again(transaction_id, self._clock.monotonic())
            _LOGGER.warning(
                "record of %s still missing, next try in %.0f s: %s", transaction_id, delay, err
            )
            return
        self._book.store_record(transaction_id, record)
        _LOGGER.info("record of stopped transaction %s fetched", transaction_id)

    @property
    def pending_records(self) -> list[str]:
        """Transactions stopped at the meter whose signed record is not fetched yet."""
        return self._book.pending

    # -- start -------------------------------------------------------------------------------

    def start_transaction(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start a signed transaction; answer a ``TransactionStartResponse``."""
        transaction_id = str(request.get("transaction_id", ""))
        return self._answer("start", transaction_id, lambda: self._start(request, transaction_id))

    def _answer(
        self, verb: str, transaction_id: str, action: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run a command under the lock; turn every failure into an answer."""
        with self._lock:
            try:
                return action()
            except RequestRejected as err:
                return self._failed(verb, transaction_id, f"request refused before sending: {err}")
            except LemDcbmError as err:
                return self._failed(verb, transaction_id, str(err))
            except Exception as err:  # noqa: BLE001 - a command must answer, never crash
                _LOGGER.exception("%s_transaction %s failed unexpectedly", verb, transaction_id)
                return self._failed(verb, transaction_id, f"internal error: {err!r}")

    def _failed(self, verb: str, transaction_id: str, reason: str) -> dict[str, Any]:
        message = f"Failed to {verb} transaction {transaction_id}: {reason}"
        _LOGGER.error(message)
        return responses.failed(message)

    def _start(self, request: dict[str, Any], transaction_id: str) -> dict[str, Any]:
        if self._info is None:
            return self._failed("start", transaction_id, "the meter is not initialised yet")
        body = build_start_body(request, self._settings.start, v2=self._meter.api_version == "v2")
        status = self._meter.status()
        if status.transaction_ongoing:
            running = self._current_transaction_id()
            if running == transaction_id:
                _LOGGER.info("transaction %s already runs at the meter", transaction_id)
                self._book.step(transaction_id, "start_confirmed")
                self._running_id = transaction_id
                return self._start_answer(transaction_id)
            self._stop_dangling(running)
            status = self._meter.status()
        self._sync_before_start(status)
        blocked = start_blocker(self._meter.status() if not status.time_sync_ok else status)
        if blocked:
            return self._failed("start", transaction_id, blocked)
        self._book.step(transaction_id, "start_requested", evse_id=body["evseId"])
        self._post_start(body, transaction_id)
        self._book.step(transaction_id, "start_confirmed")
        self._running_id = transaction_id
        _LOGGER.info("transaction %s started", transaction_id)
        return self._start_answer(transaction_id)

    def _sync_before_start(self, status: MeterStatus) -> None:
        try:
            self._timesync.sync()
        except LemDcbmError as err:
            if status.time_sync_ok:
                _LOGGER.warning("clock sync before start failed, time sync still valid: %s", err)
            else:
                raise MeterError(
                    "PUT", "/v1/settings", f"time sync is invalid and could not be fixed: {err}"
                ) from err

    def _post_start(self, body: dict[str, Any], transaction_id: str) -> None:
        attempts = 0

        def post() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self._meter.start_transaction(body)
            except MeterStatusError:
                # A retry after a lost answer: the first POST may have started it already.
                if attempts > 1 and self._runs_at_meter(transaction_id):
                    return
                raise

        call_with_retry(
            post,
            retries=self._settings.transaction_retries,
            delay_s=self._settings.transaction_retry_delay_s,
            sleep=self._sleep,
        )

    def _runs_at_meter(self, transaction_id: str) -> bool:
        legal = self._meter.legal()
        return legal.running and legal.transaction_id == transaction_id

    def _start_answer(self, transaction_id: str) -> dict[str, Any]:
        now = self._clock.utc_now()
        start_value = None
        if self._settings.signed_start_value:
            try:
                ocmf = self._meter.ocmf(transaction_id)
                start_value = responses.signed_meter_value(ocmf, self.public_key_ocmf)
            except LemDcbmError as err:
                _LOGGER.warning("begin record of %s not available: %s", transaction_id, err)
        return responses.start_ok(
            rfc3339(now + MIN_TRANSACTION_DURATION),
            rfc3339(now + MAX_TRANSACTION_DURATION),
            start_value,
        )

    def _stop_dangling(self, transaction_id: str) -> None:
        _LOGGER.warning("stopping transaction %s left running at the meter", transaction_id)
        self._stop_at_meter(transaction_id)
        try:
            self._book.store_record(transaction_id, self._fetch_record(transaction_id))
        except LemDcbmError as err:
            _LOGGER.error(
                "record of the dangling transaction %s not fetched yet: %s", transaction_id, err
            )
            self._book.mark_pending(transaction_id, self._clock.monotonic())

    # -- stop --------------------------------------------------------------------------------

    def stop_transaction(self, transaction_id: str) -> dict[str, Any]:
        """Stop a transaction and answer its signed record (``TransactionStopResponse``)."""
        return self._answer("stop", transaction_id, lambda: self._stop(transaction_id))

    def _stop(self, transaction_id: str) -> dict[str, Any]:
        if self._info is None:
            return self._failed("stop", transaction_id, "the meter is not initialised yet")
        kept = self._book.record_of(transaction_id)
        if kept is not None:
            return self._stop_answer(transaction_id, kept)
        status = self._meter.status()
        running = self._current_transaction_id() if status.transaction_ongoing else None
        if transaction_id == "":
            if running is None:
                self._running_id = None
                return responses.failed("no transaction running")
            transaction_id = running
        if running == transaction_id:
            self._stop_at_meter(transaction_id)
        try:
            record = self._fetch_record(transaction_id)
        except LemDcbmError:
            if transaction_id in self._book.pending or running == transaction_id:
                self._book.mark_pending(transaction_id, self._clock.monotonic())
            raise
        self._book.store_record(transaction_id, record)
        return self._stop_answer(transaction_id, record)

    def _stop_at_meter(self, transaction_id: str) -> None:
        attempts = 0

        self._book.step(transaction_id, "stop_requested")

        def put() -> None:
            nonlocal attempts
            attempts += 1
            try:
                report = self._meter.stop_transaction(transaction_id)
            except MeterStatusError:
                # A retry after a lost answer: the first PUT may have stopped it already.
                if attempts > 1 and not self._runs_at_meter(transaction_id):
                    return
                raise
            if report.still_running:
                raise MeterError(
                    "PUT",
                    "/legal",
                    f"the meter reports transaction status {report.transaction_status} "
                    "(still running) after the stop",
                )
            self._book.stop_confirmed(transaction_id, transaction_status=report.transaction_status)
            self._report_billable(transaction_id, report.billable, report.transaction_status)

        call_with_retry(
            put,
            retries=self._settings.transaction_retries,
            delay_s=self._settings.transaction_retry_delay_s,
            sleep=self._sleep,
        )
        if self._running_id == transaction_id:
            self._running_id = None
        _LOGGER.info("transaction %s stopped at the meter", transaction_id)

    def _fetch_record(self, transaction_id: str, retries: int | None = None) -> str:
        """Fetch the final record of a stopped transaction; verify it, once more if bad."""
        record = self._get_final_record(transaction_id, retries)
        if self._verified(record):
            self._clear_alert(SIGNATURE_INVALID)
            return record
        _LOGGER.warning("record of %s does not verify; fetching it once more", transaction_id)
        record = self._get_final_record(transaction_id, retries)
        if self._verified(record):
            self._clear_alert(SIGNATURE_INVALID)
            return record
        message = (
            f"the signed record of transaction {transaction_id} does not verify with the "
            "meter's publicKeyOcmf; it is passed on unchanged (the meter is the authority)"
        )
        _LOGGER.error(message)
        self._alert(SIGNATURE_INVALID, message)
        return record

    def _get_final_record(self, transaction_id: str, retries: int | None) -> str:
        try:
            record = call_with_retry(
                lambda: self._meter.ocmf(transaction_id),
                retries=self._settings.transaction_retries if retries is None else retries,
                delay_s=self._settings.transaction_retry_delay_s,
                sleep=self._sleep,
                # A GET is safe to repeat; a meter busy storing the record may answer 5xx.
                retry_on=(MeterConnectionError, MeterStatusError),
            )
        except MeterError as err:
            raise MeterError(
                err.method,
                err.endpoint,
                f"the transaction is not running at the meter (stopped), but its signed "
                f"record could not be fetched yet ({err.detail}); it is fetched again in the "
                "background, stop it again to get it",
            ) from err
        if not has_end_reading(record):
            raise MeterError(
                "GET", "/ocmf", f"the meter's record for {transaction_id} has no end reading"
            )
        return record

    def _verified(self, record: str) -> bool:
        try:
            return self._verify(record, self.public_key_ocmf)
        except ValueError as err:
            _LOGGER.error("signed record cannot be checked: %s", err)
            return False

    def _report_billable(self, transaction_id: str, billable: bool, status: int) -> None:
        if billable:
            self._clear_alert(NOT_BILLABLE)
            return
        message = (
            f"transaction {transaction_id} is not billable: the meter reports transaction "
            f"status {status} (17 expected); the meter saw a problem during the transaction"
        )
        _LOGGER.warning(message)
        self._alert(NOT_BILLABLE, message)

    def _alert(self, sub_type: str, message: str) -> None:
        if self._alerts is not None:
            self._alerts.warn(sub_type, message)

    def _clear_alert(self, sub_type: str) -> None:
        if self._alerts is not None:
            self._alerts.clear(sub_type)

    def _stop_answer(self, transaction_id: str, record: str) -> dict[str, Any]:
        _LOGGER.info("signed record of transaction %s returned", transaction_id)
        return responses.stop_ok(responses.signed_meter_value(record, self.public_key_ocmf))


def api_version_from_firmware(version: str) -> str:
    """Guess the API generation from ``applicationFirmwareVersion`` (e.g. ``MU-2.3.0.1``).

    Only a fallback: which firmware serves ``/v2`` is not documented, so the meter is
    asked first. Versions are compared as numbers, not text: ``MU-10.0`` is newer than
    ``MU-2.3``. Major version 2 and later is taken for ``/v2``.
    """
    numbers = [int(part) for part in re.findall(r"\d+", version.split("_")[0])]
    return "v2" if numbers and numbers[0] >= 2 else "v1"


def start_blocker(status: MeterStatus) -> str:
    """Why the meter would refuse a start now, or "" when it would accept one."""
    if not status.sensor_link_ok:
        return "the meter's sensor link is down (suLinkStatusIsOk false)"
    if status.fatal_error:
        return "the meter reports a fatal error (muFatalErrorOccured)"
    if not status.time_sync_ok:
        return "the meter's time sync is invalid (timeSyncStatusIsOk false)"
    return ""


def has_end_reading(record: str) -> bool:
    """True when an OCMF record holds a transaction end reading (``TX: "E"``)."""
    try:
        readings = parse_ocmf(record).payload.get("RD", [])
    except ValueError:
        return False
    return isinstance(readings, list) and any(
        isinstance(r, dict) and r.get("TX") == "E" for r in readings
    )
