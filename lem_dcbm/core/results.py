"""What the core takes and gives as values: requests, measurements, command outcomes.

The EVerest adapters shape them into the interface's types (``lem_dcbm.everest.shapes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A signed OCMF record exactly as the meter sent it, with the key that verifies it."""

    ocmf: str
    public_key_ocmf: str


@dataclass(frozen=True, slots=True)
class StartResult:
    """The outcome of a start: the stop-time window, or why it failed."""

    #: Why the start failed; None when it succeeded.
    error: str | None = None
    #: The earliest stop the meter accepts (its minimum transaction duration).
    min_stop_time: datetime | None = None
    #: The latest stop before the meter's time sync expires.
    max_stop_time: datetime | None = None
    #: The signed begin record, when asked for and available.
    begin_record: SignedRecord | None = None

    @property
    def ok(self) -> bool:
        """True when the transaction runs at the meter."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class StopResult:
    """The outcome of a stop: the signed record, or why there is none."""

    #: Why the stop has no record; None when it succeeded.
    error: str | None = None
    record: SignedRecord | None = None

    @property
    def ok(self) -> bool:
        """True when the record is there."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class TransactionRequest:
    """A start as the core reads it: the parts the meter's start body is made of."""

    transaction_id: str
    evse_id: str = ""
    #: The customer's identification (an RFID uid, an eMAID), signed in the record.
    identification_data: str = ""
    #: The tariff text a v2 meter signs with the transaction.
    tariff_text: str = ""


@dataclass(frozen=True, slots=True)
class PowermeterValue:
    """One live measurement in SI units (W, Wh, V, A, degC), stamped in UTC."""

    timestamp: datetime
    meter_id: str
    energy_import_wh: float
    energy_export_wh: float
    power_w: float
    voltage_v: float
    current_a: float
    #: The meter's two temperature sensors (``temperatureH`` and ``temperatureL``).
    temperature_h_c: float
    temperature_l_c: float
    #: A record no transaction event carries, riding on the var (``core.record_rider``).
    signed: SignedRecord | None = None

    @property
    def temperatures(self) -> tuple[float, float]:
        """Both sensors' readings."""
        return (self.temperature_h_c, self.temperature_l_c)
