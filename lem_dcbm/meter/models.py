"""Typed, frozen views of the meter's answers, parsed once at the edge.

The meter speaks camelCase JSON; only this module knows those names. Each ``parse_*``
function raises ``ShapeError`` naming the field that is missing or of the wrong type;
the client turns that into a ``MeterBodyError`` naming the endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lem_dcbm.errors import LemDcbmError

#: Status bits in ``status.value`` order (bit 0 first), as the meter names them.
STATUS_BITS: tuple[str, ...] = (
    "suLinkStatusIsOk",
    "muFatalErrorOccured",
    "transactionIsOnGoing",
    "tamperingIsDetected",
    "timeSyncStatusIsOk",
    "overTemperatureIsDetected",
    "reversedVoltage",
    "suMeasureFailureOccurred",
)

#: Error bits in ``errors.value`` order (bit 0 first).
ERROR_BITS: tuple[str, ...] = (
    "muInitIsFailed",
    "suStateIsInvalid",
    "versionCheckIsFailed",
    "muRngInitIsFailed",
    "muDataIntegrityIsFailed",
    "muFwIntegrityIsFailed",
    "suIntegrityIsFailed",
    "logbookIntegrityIsFailed",
    "logbookIsFull",
    "memoryAccessIsFailed",
    "muStateIsFailed",
)

#: ``transactionStatus`` of a stopped transaction that the meter considers billable.
BILLABLE_TRANSACTION_STATUS = 17
TRANSACTION_ONGOING_BIT = 1 << 2


T = TypeVar("T")


class ShapeError(LemDcbmError, ValueError):
    """A meter answer lacks a field or has one of the wrong type."""


def _object(data: object, path: str = "") -> Mapping[str, object]:
    """``data`` when it is a JSON object; raise ``ShapeError`` naming ``path`` otherwise."""
    if not isinstance(data, Mapping):
        raise ShapeError(f"expected an object at '{path.rstrip('.') or '/'}'")
    return data


def _get(data: object, key: str, kind: type[T] | tuple[type[T], ...], path: str = "") -> T:
    where = f"{path}{key}"
    data = _object(data, path)
    if key not in data:
        raise ShapeError(f"field '{where}' is missing")
    value = data[key]
    # bool is an int in Python; a JSON true is never a number here.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ShapeError(f"field '{where}' has the wrong type (bool)")
    if not isinstance(value, kind):
        raise ShapeError(f"field '{where}' has the wrong type ({type(value).__name__})")
    return value


def _number(data: object, key: str, path: str = "") -> float:
    return float(_get(data, key, (int, float), path))


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """``GET /v1/status``: health bits, identity, key and firmware."""

    value: int
    bits: Mapping[str, bool]
    error_value: int
    error_bits: Mapping[str, bool]
    meter_id: str
    public_key_ocmf: str
    public_key: str
    firmware_version: str
    time: str
    index_of_last_transaction: int | None = None
    number_of_stored_transactions: int | None = None

    @property
    def transaction_ongoing(self) -> bool:
        """True while the meter runs a transaction."""
        return bool(self.bits.get("transactionIsOnGoing", False))

    @property
    def time_sync_ok(self) -> bool:
        """True while the meter's time synchronisation is valid."""
        return bool(self.bits.get("timeSyncStatusIsOk", False))

    @property
    def sensor_link_ok(self) -> bool:
        """True while the measuring unit talks to its sensor."""
        return bool(self.bits.get("suLinkStatusIsOk", False))

    @property
    def fatal_error(self) -> bool:
        """True when the meter reports a fatal error."""
        return bool(self.bits.get("muFatalErrorOccured", False))


def _bits(data: object, names: tuple[str, ...], path: str) -> dict[str, bool]:
    raw = _get(data, "bits", Mapping, path)
    out: dict[str, bool] = {}
    for name in names:
        if name in raw:
            out[name] = bool(_get(raw, name, bool, f"{path}bits."))
    for name, value in raw.items():
        if name not in out and isinstance(value, bool):
            out[name] = value
    return out


def parse_status(body: object) -> MeterStatus:
    """Parse the body of ``GET /v1/status``."""
    data = _object(body)
    status = _get(data, "status", Mapping)
    errors = data.get("errors", {"value": 0, "bits": {}}) if isinstance(data, Mapping) else {}
    version = _get(data, "version", Mapping)
    index = data.get("indexOfLastTransaction")
    stored = data.get("numberOfStoredTransactions")
    return MeterStatus(
        value=int(_get(status, "value", int, "status.")),
        bits=_bits(status, STATUS_BITS, "status."),
        error_value=int(_get(errors, "value", int, "errors.")),
        error_bits=_bits(errors, ERROR_BITS, "errors."),
        meter_id=str(_get(data, "meterId", str)),
        public_key_ocmf=str(_get(data, "publicKeyOcmf", str)),
        public_key=str(data.get("publicKey", "")),
        firmware_version=str(_get(version, "applicationFirmwareVersion", str, "version.")),
        time=str(data.get("time", "")),
        index_of_last_transaction=index if isinstance(index, int) else None,
        number_of_stored_transactions=stored if isinstance(stored, int) else None,
    )


@dataclass(frozen=True, slots=True)
class LiveMeasure:
    """``GET /v1/livemeasure`` in the meter's units (V, A, kW, degC, kWh)."""

    voltage_v: float
    current_a: float
    power_kw: float
    temperature_h_c: float
    temperature_l_c: float
    energy_import_kwh: float
    energy_export_kwh: float
    timestamp: str


def parse_livemeasure(data: object) -> LiveMeasure:
    """Parse the body of ``GET /v1/livemeasure`` (or ``/v2/livemeasure``)."""
    return LiveMeasure(
        voltage_v=_number(data, "voltage"),
        current_a=_number(data, "current"),
        power_kw=_number(data, "power"),
        temperature_h_c=_number(data, "temperatureH"),
        temperature_l_c=_number(data, "temperatureL"),
        energy_import_kwh=_number(data, "energyImportTotal"),
        energy_export_kwh=_number(data, "energyExportTotal"),
        timestamp=str(_get(data, "timestamp", str)),
    )


@dataclass(frozen=True, slots=True)
class LegalState:
    """``GET``/``POST /v1/legal``: the current or last transaction."""

    transaction_id: str
    running: bool
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def pagination(self) -> int | None:
        """``paginationCounter`` when the meter sent a usable one."""
        return _optional_int(self.raw, "paginationCounter")

    @property
    def evse_id(self) -> str | None:
        """``evseId`` the transaction was started with, None when the meter did not say."""
        value = self.raw.get("evseId")
        return value if isinstance(value, str) else None

    @property
    def client_id(self) -> str | None:
        """``clientId`` the transaction was started with, None when the meter did not say."""
        value = self.raw.get("clientId")
        return value if isinstance(value, str) else None

    @property
    def transaction_status(self) -> int | None:
        """``meterValue.transactionStatus`` of a stopped transaction, when present."""
        meter_value = self.raw.get("meterValue")
        if self.running or not isinstance(meter_value, Mapping):
            return None
        return _optional_int(meter_value, "transactionStatus")


def _optional_int(data: Mapping[str, object], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_legal(body: object) -> LegalState:
    """Parse the body of ``GET /v1/legal`` or of a successful start."""
    data = _object(body)
    return LegalState(
        transaction_id=str(_get(data, "transactionId", str)),
        running=bool(_get(data, "running", bool)),
        raw=dict(data),
    )


@dataclass(frozen=True, slots=True)
class StopReport:
    """``PUT /v1/legal``: the meter's report of a stopped transaction."""

    transaction_id: str
    transaction_status: int
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def still_running(self) -> bool:
        """True if bit 2 (transaction ongoing) is set, i.e. the stop did not take."""
        return bool(self.transaction_status & TRANSACTION_ONGOING_BIT)

    @property
    def billable(self) -> bool:
        """True when the meter saw nothing wrong during the transaction (status 17)."""
        return self.transaction_status == BILLABLE_TRANSACTION_STATUS

    @property
    def pagination(self) -> int | None:
        """``paginationCounter``: the number the transaction's OCMF record carries as PG."""
        return _optional_int(self.raw, "paginationCounter")


def parse_stop_report(body: object) -> StopReport:
    """Parse the body of ``PUT /v1/legal?transactionId=...``."""
    data = _object(body)
    meter_value = _get(data, "meterValue", Mapping)
    return StopReport(
        transaction_id=str(data.get("transactionId", "")),
        transaction_status=int(_get(meter_value, "transactionStatus", int, "meterValue.")),
        raw=dict(data),
    )


@dataclass(frozen=True, slots=True)
class SettingsResult:
    """``PUT /v1/settings``: whether the meter accepted the write."""

    accepted: bool
    meter_id: str


def parse_settings_result(body: object) -> SettingsResult:
    """Parse the body of ``PUT /v1/settings``."""
    data = _object(body)
    return SettingsResult(
        accepted=_get(data, "result", int) == 1,
        meter_id=str(data.get("meterId", "")),
    )
