"""What a signed record says, in the terms an operator reads: who, when, how much."""

from __future__ import annotations

from dataclasses import dataclass

from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.records.checks import OBIS_EXPORT, OBIS_IMPORT, Reading, readings_of


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """The readable content of one OCMF record."""

    meter_serial: str | None
    pagination: str | None
    identification_type: str | None
    identification: str | None
    evse_id: str | None
    tariff_text: str | None
    begin_time: str | None
    end_time: str | None
    begin_import_kwh: float | None
    end_import_kwh: float | None
    begin_export_kwh: float | None
    end_export_kwh: float | None

    @property
    def energy_kwh(self) -> float | None:
        """Imported energy over the transaction, kWh (None without both readings)."""
        if self.begin_import_kwh is None or self.end_import_kwh is None:
            return None
        return round(self.end_import_kwh - self.begin_import_kwh, 3)

    @property
    def energy_wh(self) -> float | None:
        """Imported energy over the transaction, Wh."""
        energy = self.energy_kwh
        return None if energy is None else round(energy * 1000.0, 3)

    def lines(self) -> list[str]:
        """The summary as ``name: value`` lines."""
        rows = [
            ("meter", self.meter_serial),
            ("record number", self.pagination),
            ("identification", f"{self.identification_type} {self.identification}"),
            ("EVSE", self.evse_id),
            ("tariff text", self.tariff_text),
            ("begin", f"{self.begin_time}  import {self.begin_import_kwh} kWh"),
            ("end", f"{self.end_time}  import {self.end_import_kwh} kWh"),
            ("energy", f"{self.energy_kwh} kWh ({self.energy_wh} Wh)"),
        ]
        return [f"{name:>15}: {value if value is not None else '-'}" for name, value in rows]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _value(readings: list[Reading], kind: str, obis: str) -> float | None:
    for reading in readings:
        value = reading.fields.get("RV")
        if reading.kind == kind and reading.fields.get("RI") == obis:
            return float(value) if isinstance(value, int | float) else None
    return None


def _time(readings: list[Reading], kind: str) -> str | None:
    return next((r.time for r in readings if r.kind == kind), None)


def summarize(record: str) -> RecordSummary:
    """Read ``record``'s content; raise ``ValueError`` when it is not an OCMF record."""
    payload = parse_ocmf(record).payload
    readings = readings_of(payload)
    return RecordSummary(
        meter_serial=_text(payload.get("MS")),
        pagination=_text(payload.get("PG")),
        identification_type=_text(payload.get("IT")),
        identification=_text(payload.get("ID")),
        evse_id=_text(payload.get("CI")),
        tariff_text=_text(payload.get("TT")),
        begin_time=_time(readings, "B"),
        end_time=_time(readings, "E"),
        begin_import_kwh=_value(readings, "B", OBIS_IMPORT),
        end_import_kwh=_value(readings, "E", OBIS_IMPORT),
        begin_export_kwh=_value(readings, "B", OBIS_EXPORT),
        end_export_kwh=_value(readings, "E", OBIS_EXPORT),
    )
