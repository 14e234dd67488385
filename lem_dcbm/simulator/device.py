"""The simulated LEM DCBM 400/600: a state machine driven by a ``Clock``, without sockets.

Every public method takes the meter's lock, so the HTTP server may call it from many
threads. Refused requests raise a ``Refusal`` (see ``refusals``) that the server turns
into an HTTP answer; everything else returns the JSON-able answer body.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lem_dcbm.clock import Clock, rfc3339
from lem_dcbm.json_types import JsonObject
from lem_dcbm.simulator.legal_request import StartRequest, parse_start
from lem_dcbm.simulator.logbook import LOGBOOK_CAPACITY, Logbook
from lem_dcbm.simulator.meter_bits import BIT, ERROR_NAMES, PRECONDITIONS, STATUS_NAMES
from lem_dcbm.simulator.meter_time import (
    iso_seconds,
    local_time,
    ocmf_time,
    parse_tz,
    parse_utc,
)
from lem_dcbm.simulator.ocmf_signer import (
    CableCompensation,
    OcmfContent,
    OcmfReading,
    OcmfSigner,
    build_payload,
)
from lem_dcbm.simulator.refusals import ConditionError, FieldError, NotFound
from lem_dcbm.simulator.ring import LOOKUP_WINDOW, RING_CAPACITY, TransactionRing
from lem_dcbm.simulator.settings_store import CABLE_TABLE, check_write, default_settings, merge

_LOGGER = logging.getLogger(__name__)

ONGOING = BIT["transactionIsOnGoing"]
#: Bits that say "all is well"; a transaction keeps them only if they held throughout.
HEALTH_BITS = BIT["suLinkStatusIsOk"] | BIT["timeSyncStatusIsOk"]
__all__ = ["LOGBOOK_CAPACITY", "MeterConfig", "SimulatedMeter"]
#: Settings writes ``state()`` reports (the latest).
SETTINGS_WRITES_KEPT = 1000


@dataclass(frozen=True, kw_only=True)
class MeterConfig:
    """What a simulated meter is; durations are scalable for tests."""

    #: Digit string the meter reports as ``meterId`` (and OCMF ``GS``/``MS``).
    meter_id: str = "12024072805"
    #: ``applicationFirmwareVersion``, e.g. ``MU-2.3.0.1``.
    firmware: str = "MU-2.3.0.1"
    sensor_firmware: str = "SU-0.1.3.0"
    #: "v2" serves /v1 and /v2 paths; "v1" answers 404 on every /v2 path.
    api: str = "v2"
    min_transaction_seconds: float = 120.0
    #: Settings written this soon after power-on are not persisted.
    settings_window_seconds: float = 120.0
    time_sync_validity_seconds: float = 48 * 3600.0
    #: Start with a valid time sync (a meter synced within the last 48 h).
    synced: bool = True
    tls_on: bool = False
    ip_address: str = "127.0.0.1"
    #: The TLS certificate as ``/v1/certificate`` serves it.
    certificate_pem: str = ""
    storage_capacity: int = RING_CAPACITY
    ocmf_search_window: int = LOOKUP_WINDOW
    logbook_capacity: int = LOGBOOK_CAPACITY
    #: Transactions made before this power-on (the ring full at ``storage_capacity``).
    ring_filled: int = 0
    #: Logbook events logged before this power-on (full at ``logbook_capacity``).
    logbook_filled: int = 0
    #: With ``synced``: the last sync was made so long ago that it expires this soon.
    sync_expires_in_seconds: float | None = None
    #: How long an NTP sync waits for its answer (meter: up to 30 s); a start aborts it.
    ntp_answer_seconds: float = 0.0
    over_temperature_c: float = 85.0


@dataclass
class Load:
    """The simulated electrical load and temperature."""

    power_kw: float = 0.0
    voltage_v: float = 400.0
    temperature_c: float = 25.0


@dataclass
class Memory:
    """What the meter keeps across a power cycle once persisted: settings and last sync."""

    settings: dict[str, Any]
    last_sync: float | None


@dataclass
class Transaction:
    """One stored transaction and its signed record."""

    index: int
    pagination: int
    api: str
    request: StartRequest
    identification_type: int
    start_mono: float
    start_local: datetime
    start_import: float
    start_export: float
    status: int = 0
    running: bool = True
    record: str = ""
    report: dict[str, Any] | None = None
    stop_mono: float | None = None


def _fold(accumulated: int, current: int) -> int:
    """Problem bits are OR-ed over the transaction, health bits AND-ed (a loss sticks)."""
    return ((accumulated & current) & HEALTH_BITS) | ((accumulated | current) & ~HEALTH_BITS)


def _value(bits: Mapping[str, bool], names: tuple[str, ...]) -> int:
    return sum(1 << position for position, name in enumerate(names) if bits.get(name))


def _auth_tag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16].upper()


class SimulatedMeter:
    """The meter's behaviour: status, measurement, transactions, records and settings."""

    def __init__(self, clock: Clock, signer: OcmfSigner, config: MeterConfig | None = None) -> None:
        self._clock = clock
        self._signer = signer
        self.config = config or MeterConfig()
        self._lock = threading.RLock()
        now = clock.monotonic()
        self._power_on = now
        self._reboots = 0
        synced_at = now if self.config.synced else None
        expires_in = self.config.sync_expires_in_seconds
        if synced_at is not None and expires_in is not None:
            synced_at = now - self.config.time_sync_validity_seconds + expires_in
        self._stored = Memory(default_settings(self.config.tls_on), synced_at)
        self._live = copy.deepcopy(self._stored)
        self._clock_offset = timedelta(0)
        #: When the NTP sync under way gets its answer (None: none under way).
        self._ntp_answer_at: float | None = None
        self._load = Load()
        self._import_kwh = 0.0
        self._export_kwh = 0.0
        self._integrated_at = now
        self._reversed_latched = False
        self._forced_status: dict[str, bool] = {}
        self._forced_errors: dict[str, bool] = {}
        self._ring: TransactionRing[Transaction] = TransactionRing(
            self.config.storage_capacity,
            self.config.ocmf_search_window,
            prefilled=self.config.ring_filled,
            make_history=self._history,
        )
        self._running: Transaction | None = None
        #: The latest settings writes, for tests; bounded so that a long run stays small.
        self._settings_writes: deque[dict[str, Any]] = deque(maxlen=SETTINGS_WRITES_KEPT)
        self._logbook = Logbook(self.config.logbook_capacity, prefilled=self.config.logbook_filled)
        self._log("powerOn")

    @property
    def tls_active(self) -> bool:
        """True while the meter serves HTTPS: the live ``http.tls_on``, in effect at once."""
        with self._lock:
            return bool(self._live.settings["http"]["tls_on"])

    # -- time -------------------------------------------------------------------------

    def _now_local(self) -> datetime:
        settings = self._live.settings["time"]
        utc = self._clock.utc_now() + self._clock_offset
        return local_time(utc, parse_tz(settings["tz"]), settings["dst"])

    def _ntp_active(self) -> bool:
        return bool(self._live.settings["ntp"]["ntpActivated"])

    def _ntp_catch_up(self) -> None:
        """NTP syncs at its answer, then keeps the clock synced while no transaction runs."""
        if not self._ntp_active():
            return
        now = self._clock.monotonic()
        answer = self._ntp_answer_at
        if answer is not None and now >= answer:
            self._ntp_answer_at = None
            self._live.last_sync = answer
            if self._stored.settings["ntp"]["ntpActivated"]:
                self._stored.last_sync = answer
        last = self._live.last_sync
        if self._ntp_answer_at is None and self._running is None and last is not None:
            self._live.last_sync = max(last, now)

    def _start_ntp_sync(self) -> None:
        self._ntp_answer_at = self._clock.monotonic() + self.config.ntp_answer_seconds
        self._ntp_catch_up()

    def _time_synced(self) -> bool:
        self._ntp_catch_up()
        last = self._live.last_sync
        validity = self.config.time_sync_validity_seconds
        return last is not None and self._clock.monotonic() - last < validity

    def _in_settings_window(self) -> bool:
        return self._clock.monotonic() - self._power_on < self.config.settings_window_seconds

    # -- measurement and status -------------------------------------------------------

    def _integrate(self) -> None:
        now = self._clock.monotonic()
        energy = self._load.power_kw * (now - self._integrated_at) / 3600.0
        if energy >= 0:
            self._import_kwh += energy
        else:
            self._export_kwh -= energy
        self._integrated_at = now

    def _error_bits(self) -> dict[str, bool]:
        bits = dict.fromkeys(ERROR_NAMES, False)
        bits["logbookIsFull"] = self._logbook.full
        bits.update(self._forced_errors)
        return bits

    def _status_bits(self) -> dict[str, bool]:
        bits = {
            "suLinkStatusIsOk": True,
            "muFatalErrorOccured": any(self._error_bits().values()),
            "transactionIsOnGoing": self._running is not None,
            "tamperingIsDetected": False,
            "timeSyncStatusIsOk": self._time_synced(),
            "overTemperatureIsDetected": self._load.temperature_c > self.config.over_temperature_c,
            "reversedVoltage": self._reversed_latched,
            "suMeasureFailureOccurred": False,
        }
        bits.update(self._forced_status)
        return bits

    def _observe(self) -> int:
        """Fold the present status into the running transaction; return the status value."""
        value = _value(self._status_bits(), STATUS_NAMES)
        if self._running is not None:
            self._running.status = _fold(self._running.status, value)
        return value

    def _log(self, event: str, **detail: object) -> None:
        self._logbook.add(iso_seconds(self._now_local()), event, **detail)

    def status(self) -> JsonObject:
        """``GET /v1/status``."""
        with self._lock:
            value = self._observe()
            errors = self._error_bits()
            return {
                "status": {"value": value, "bits": self._status_bits()},
                "version": {
                    "applicationFirmwareVersion": self.config.firmware,
                    "applicationFirmwareAuthTag": _auth_tag(self.config.firmware),
                    "legalFirmwareVersion": self.config.firmware,
                    "legalFirmwareAuthTag": _auth_tag("legal " + self.config.firmware),
                    "sensorFirmwareVersion": self.config.sensor_firmware,
                    "sensorFirmwareCrc": _auth_tag(self.config.sensor_firmware)[:8],
                },
                "time": iso_seconds(self._now_local()),
                "ipAddress": self.config.ip_address,
                "meterId": self.config.meter_id,
                "errors": {"value": _value(errors, ERROR_NAMES), "bits": errors},
                "publicKey": self._signer.public_key_raw,
                "publicKeyOcmf": self._signer.public_key_ocmf,
                "indexOfLastTransaction": self._ring.last_index,
                "numberOfStoredTransactions": self._ring.stored,
            }

    def livemeasure(self) -> JsonObject:
        """``GET /v1/livemeasure`` and ``/v2/livemeasure`` (kW, kWh, degrees Celsius)."""
        with self._lock:
            self._integrate()
            self._observe()
            load = self._load
            current = load.power_kw * 1000.0 / load.voltage_v if load.voltage_v else 0.0
            return {
                "voltage": round(load.voltage_v, 3),
                "current": round(current, 3),
                "power": round(load.power_kw, 3),
                "temperatureH": round(load.temperature_c, 2),
                "temperatureL": round(load.temperature_c - 2.0, 2),
                "energyImportTotal": round(self._import_kwh, 3),
                "energyExportTotal": round(self._export_kwh, 3),
                "timestamp": iso_seconds(self._now_local()),
            }

    def logbook(self) -> JsonObject:
        """``GET /v1/logbook``: the meter's event log (shape not documented; ours)."""
        with self._lock:
            return {"count": self._logbook.count, "entries": self._logbook.recent()}

    def certificate(self) -> dict[str, str]:
        """``GET /v1/certificate``: the TLS certificate without line breaks at BEGIN/END."""
        return {"certificate": self.config.certificate_pem}

    # -- transactions -----------------------------------------------------------------

    def _history(self, pagination: int, index: int) -> Transaction:
        """A finished transaction made before the simulation began (a prefilled ring)."""
        body = {
            "evseId": "DE*SIM*HISTORY",
            "transactionId": f"history-{pagination}",
            "clientId": "",
            "tariffId": 0,
            "cableId": 0,
            "userData": "",
        }
        tx = Transaction(
            index=index,
            pagination=pagination,
            api="v1",
            request=parse_start(body, "v1"),
            identification_type=0,
            start_mono=self._power_on,
            start_local=self._now_local(),
            start_import=0.0,
            start_export=0.0,
            running=False,
            stop_mono=self._power_on,
        )
        end = OcmfReading(ocmf_time(tx.start_local, True), 0.0, 0.0)
        tx.record = self._signer.record(build_payload(self._ocmf_content(tx, end, "G")))
        tx.report = {"paginationCounter": pagination, "transactionId": body["transactionId"]}
        return tx

    def _ocmf_content(self, tx: Transaction, end: OcmfReading | None, state: str) -> OcmfContent:
        request = tx.request
        name, resistance = CABLE_TABLE[request.cable_id]
        return OcmfContent(
            meter_id=self.config.meter_id,
            firmware=f"{self.config.firmware}_{self.config.sensor_firmware}",
            pagination=tx.pagination,
            identification_type=tx.identification_type,
            identification=request.client_id,
            tariff_text=request.tariff_text,
            evse_id=request.evse_id,
            cable=CableCompensation(name, request.cable_id, resistance),
            begin=OcmfReading(ocmf_time(tx.start_local, True), tx.start_import, tx.start_export),
            end=end,
            end_state=state,
        )

    def start_transaction(self, body: object, api: str) -> JsonObject:
        """``POST /{api}/legal``: validate, check preconditions, start; the 201 body."""
        with self._lock:
            request = parse_start(body, api)
            self._integrate()
            bits = self._status_bits()
            for bit in PRECONDITIONS:
                if bits[bit.name] != bit.start_needs:
                    raise ConditionError(bit.name, f"start refused: {bit.refusal}")
            if self._ntp_answer_at is not None:
                # The manual: starting a transaction aborts a running NTP sync.
                self._ntp_answer_at = None
                self._log("ntpSyncAborted")
            tx = Transaction(
                index=self._ring.next_index,
                pagination=self._ring.count + 1,
                api=api,
                request=request,
                identification_type=int(self._live.settings["ocmfId"]["IT"]),
                start_mono=self._clock.monotonic(),
                start_local=self._now_local(),
                start_import=self._import_kwh,
                start_export=self._export_kwh,
            )
            tx.record = self._signer.record(build_payload(self._ocmf_content(tx, None, "G")))
            self._ring.add(tx)
            self._running = tx
            tx.status = _value(self._status_bits(), STATUS_NAMES)
            self._log("transactionStart", transactionId=request.transaction_id)
            _LOGGER.info("transaction %s started", request.transaction_id)
            return {**request.echo, "running": True}

    def stop_transaction(self, transaction_id: str | None, body: object) -> JsonObject:
        """``PUT /{api}/legal?transactionId=ID`` with ``{"running": false}``: the report."""
        with self._lock:
            if not transaction_id:
                raise FieldError("transactionId", "the query parameter transactionId is missing")
            if not isinstance(body, Mapping) or body.get("running") is not False:
                raise FieldError("running", 'the body must be {"running": false}')
            tx = self._running
            if tx is None:
                raise ConditionError("transactionIsOnGoing", "no transaction is running")
            if tx.request.transaction_id != transaction_id:
                raise ConditionError(
                    "transactionId",
                    f"transaction {transaction_id} is not the running one",
                )
            elapsed = self._clock.monotonic() - tx.start_mono
            if elapsed < self.config.min_transaction_seconds:
                raise ConditionError(
                    "minimumDuration",
                    f"a transaction must run at least {self.config.min_transaction_seconds:g} s"
                    f" (this one ran {elapsed:.0f} s)",
                )
            self._integrate()
            self._observe()
            self._finish(tx)
            self._log("transactionStop", transactionId=transaction_id)
            _LOGGER.info("transaction %s stopped, status %d", transaction_id, tx.status)
            assert tx.report is not None
            return dict(tx.report)

    def _finish(self, tx: Transaction) -> None:
        tx.running = False
        tx.stop_mono = self._clock.monotonic()
        tx.status &= ~ONGOING
        self._running = None
        stop_local = self._now_local()
        state = "G"
        if tx.status & BIT["tamperingIsDetected"]:
            state = "T"
        elif tx.status & (BIT["suMeasureFailureOccurred"] | BIT["muFatalErrorOccured"]):
            state = "E"
        end = OcmfReading(
            ocmf_time(stop_local, self._time_synced()), self._import_kwh, self._export_kwh
        )
        tx.record = self._signer.record(build_payload(self._ocmf_content(tx, end, state)))
        request = tx.request
        name, resistance = CABLE_TABLE[request.cable_id]
        report: dict[str, Any] = {
            "paginationCounter": tx.pagination,
            "transactionId": request.transaction_id,
            "evseId": request.evse_id,
            "clientId": request.client_id,
            "tariffId": request.tariff_id,
            "cableSp": {
                "cableSpName": name,
                "cableSpId": request.cable_id,
                "cableSpRes": resistance,
            },
            "userData": request.user_data,
            "meterValue": {
                "timestampStart": iso_seconds(tx.start_local),
                "timestampStop": iso_seconds(stop_local),
                "transactionDuration": round(tx.stop_mono - tx.start_mono),
                "intermediateRead": False,
                "transactionStatus": tx.status,
                "sampleValue": {
                    "energyUnit": "kWh",
                    "energyImport": round(self._import_kwh - tx.start_import, 3),
                    "energyImportTotalStart": round(tx.start_import, 3),
                    "energyImportTotalStop": round(self._import_kwh, 3),
                    "energyExport": round(self._export_kwh - tx.start_export, 3),
                    "energyExportTotalStart": round(tx.start_export, 3),
                    "energyExportTotalStop": round(self._export_kwh, 3),
                },
            },
            "meterId": self.config.meter_id,
        }
        # Which bytes the meter signs for /legal is not documented: we sign the compact JSON.
        signed = json.dumps(report, separators=(",", ":")).encode()
        report["signature"] = self._signer.sign(signed)
        report["publicKey"] = self._signer.public_key_raw
        tx.report = report
        if self._ntp_active() and self._ntp_answer_at is None:
            self._start_ntp_sync()

    def _latest(self) -> Transaction | None:
        return self._ring.latest()

    def legal(self) -> JsonObject:
        """``GET /{api}/legal``: the current or last transaction."""
        with self._lock:
            self._integrate()
            self._observe()
            tx = self._latest()
            if tx is None:
                return {
                    "paginationCounter": 0,
                    "transactionId": "",
                    "evseId": "",
                    "clientId": "",
                    "tariffId": 0,
                    "cableId": 0,
                    "userData": "",
                    "running": False,
                }
            echo = {"paginationCounter": tx.pagination, **tx.request.echo, "running": tx.running}
            if tx.report is not None:
                return {**tx.report, **echo}
            return {
                **echo,
                "meterValue": {
                    "timestampStart": iso_seconds(tx.start_local),
                    "transactionDuration": round(self._clock.monotonic() - tx.start_mono),
                    "intermediateRead": True,
                    "transactionStatus": tx.status,
                    "sampleValue": {
                        "energyUnit": "kWh",
                        "energyImportTotalStart": round(tx.start_import, 3),
                        "energyExportTotalStart": round(tx.start_export, 3),
                    },
                },
            }

    def ocmf(self, transaction_id: str | None = None) -> str:
        """``GET /{api}/ocmf[?transactionId=ID]``: the current or last record, or last with ID."""
        with self._lock:
            if transaction_id is None:
                tx = self._latest()
                if tx is None:
                    raise NotFound("no transaction is stored")
                return tx.record
            for candidate in self._ring.searched():
                if candidate.request.transaction_id == transaction_id:
                    return candidate.record
            window = min(self._ring.stored, self._ring.window)
            raise NotFound(f"no transaction {transaction_id} among the last {window}")

    def ocmf_at(self, index: int) -> str:
        """``GET /{api}/ocmf/{index}`` by storage index, or ``/-{n}`` back from the latest (-1)."""
        with self._lock:
            stored = self._ring.stored
            if index < 0:
                if -index > stored:
                    raise NotFound(f"only {stored} transactions are stored")
                index = (self._ring.count + index) % self._ring.capacity
            tx = self._ring.at(index)
            if tx is None:
                raise NotFound(f"no transaction is stored at index {index}")
            return tx.record

    # -- settings ---------------------------------------------------------------------

    def settings(self) -> JsonObject:
        """``GET /v1/settings``: the live settings, with the meter's clock as ``time.utc``."""
        with self._lock:
            live = copy.deepcopy(self._live.settings)
            utc = self._clock.utc_now() + self._clock_offset
            live["time"] = {"utc": utc.strftime("%Y-%m-%dT%H:%M:%SZ"), **live["time"]}
            return live

    def put_settings(self, request: object) -> JsonObject:
        """``PUT /v1/settings``: apply a partial write; ``result`` 0 during a transaction."""
        with self._lock:
            record: dict[str, Any] = {
                "monotonic": self._clock.monotonic(),
                "at": rfc3339(self._clock.utc_now()),
                "since_power_on_s": self._clock.monotonic() - self._power_on,
                "body": request,
                "accepted": False,
                "persisted": False,
            }
            self._settings_writes.append(record)
            try:
                body = check_write(request)
            except FieldError as exc:
                record["error"] = exc.message
                raise
            if self._running is not None:
                record["result"] = 0
                return {"meterId": self.config.meter_id, "result": 0}
            persisted = not self._in_settings_window()
            self._apply(self._live, body)
            if persisted:
                self._apply(self._stored, body)
            time, ntp = body.get("time"), body.get("ntp")
            if isinstance(time, Mapping) and "utc" in time:
                self._clock_offset = parse_utc(time["utc"]) - self._clock.utc_now()
            elif isinstance(ntp, Mapping) and ntp.get("ntpActivated") is True:
                # Our NTP servers are the host's clock.
                self._clock_offset = timedelta(0)
                self._start_ntp_sync()
            record.update(accepted=True, persisted=persisted, result=1)
            self._log("settingsWrite", persisted=persisted)
            return {"meterId": self.config.meter_id, "result": 1}

    def _apply(self, memory: Memory, body: Mapping[str, Any]) -> None:
        now = self._clock.monotonic()
        ntp_was_on = bool(memory.settings["ntp"]["ntpActivated"])
        memory.settings = merge(memory.settings, body)
        if "time" in body and "utc" in body["time"]:
            memory.last_sync = now
            memory.settings["ntp"]["ntpActivated"] = False
        elif ntp_was_on and not memory.settings["ntp"]["ntpActivated"]:
            # NTP kept the clock synced up to now.
            memory.last_sync = now

    # -- simulation controls (not part of the meter) ----------------------------------

    def reboot(self) -> None:
        """Power cycle: unpersisted settings are lost, the settings window restarts."""
        with self._lock:
            self._integrate()
            self._observe()
            self._power_on = self._clock.monotonic()
            self._live = copy.deepcopy(self._stored)
            self._reversed_latched = False
            self._forced_status.pop("reversedVoltage", None)
            self._reboots += 1
            self._log("powerOn")
            if self._ntp_active():
                self._start_ntp_sync()
            self._observe()
            _LOGGER.info("power cycle %d (TLS %s)", self._reboots, self.tls_active)

    def set_load(
        self,
        power_kw: float | None = None,
        voltage_v: float | None = None,
        temperature_c: float | None = None,
    ) -> None:
        """Change the simulated load; energy so far is integrated at the old power."""
        with self._lock:
            self._integrate()
            if power_kw is not None:
                self._load.power_kw = float(power_kw)
            if voltage_v is not None:
                self._load.voltage_v = float(voltage_v)
                self._reversed_latched |= voltage_v < 0
            if temperature_c is not None:
                self._load.temperature_c = float(temperature_c)
            self._observe()

    def set_bits(
        self,
        status: Mapping[str, bool | None] | None = None,
        errors: Mapping[str, bool | None] | None = None,
    ) -> None:
        """Force status/error bits (``None`` releases a bit to its natural value)."""
        with self._lock:
            changes = (
                (status or {}, STATUS_NAMES, self._forced_status),
                (errors or {}, ERROR_NAMES, self._forced_errors),
            )
            for given, names, _ in changes:
                for name, value in given.items():
                    if name not in names:
                        raise FieldError(name, f"unknown bit {name}")
                    if value is not None and not isinstance(value, bool):
                        raise FieldError(name, f"{name} must be true, false or null")
            self._observe()
            for given, _, forced in changes:
                for name, value in given.items():
                    if value is None:
                        forced.pop(name, None)
                    else:
                        forced[name] = value
            self._observe()

    def set_clock_offset(self, offset_s: float) -> None:
        """Shift the meter's clock ``offset_s`` seconds from the system clock."""
        with self._lock:
            self._clock_offset = timedelta(seconds=offset_s)

    def state(self) -> JsonObject:
        """A snapshot of everything, for ``GET /_sim/state`` and tests."""
        with self._lock:
            self._integrate()
            value = self._observe()
            now = self._clock.monotonic()
            last = self._live.last_sync
            return {
                "meter_id": self.config.meter_id,
                "api": self.config.api,
                "firmware": self.config.firmware,
                "tls": self.tls_active,
                "reboots": self._reboots,
                "seconds_since_power_on": now - self._power_on,
                "settings_window_open": self._in_settings_window(),
                "time_sync": {
                    "valid": self._time_synced(),
                    "ntp": self._ntp_active(),
                    "last_sync_monotonic": last,
                    "seconds_since_sync": None if last is None else now - last,
                    "clock_offset_s": self._clock_offset.total_seconds(),
                    "meter_time": iso_seconds(self._now_local()),
                },
                "load": {
                    "power_kw": self._load.power_kw,
                    "voltage_v": self._load.voltage_v,
                    "temperature_c": self._load.temperature_c,
                },
                "energy": {"import_kwh": self._import_kwh, "export_kwh": self._export_kwh},
                "status": {"value": value, "bits": self._status_bits()},
                "forced": {
                    "status": dict(self._forced_status),
                    "errors": dict(self._forced_errors),
                },
                "settings": copy.deepcopy(self._live.settings),
                "persisted_settings": copy.deepcopy(self._stored.settings),
                "settings_writes": copy.deepcopy(list(self._settings_writes)),
                "running_transaction": (
                    self._running.request.transaction_id if self._running else None
                ),
                "transactions": [self._describe(tx) for tx in self._ring.made_here()],
                "ring": {
                    "capacity": self._ring.capacity,
                    "stored": self._ring.stored,
                    "count": self._ring.count,
                    "next_index": self._ring.next_index,
                },
                "logbook": {
                    "capacity": self._logbook.capacity,
                    "count": self._logbook.count,
                    "full": self._logbook.full,
                },
            }

    def _describe(self, tx: Transaction) -> JsonObject:
        return {
            "index": tx.index,
            "paginationCounter": tx.pagination,
            "api": tx.api,
            "transactionId": tx.request.transaction_id,
            "request": dict(tx.request.echo),
            "running": tx.running,
            "transactionStatus": tx.status,
            "start_monotonic": tx.start_mono,
            "stop_monotonic": tx.stop_mono,
            "energy_import_start_kwh": tx.start_import,
            "ocmf": tx.record,
            "report": copy.deepcopy(tx.report),
        }
