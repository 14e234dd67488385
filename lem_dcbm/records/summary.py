"""What a signed record says, in a few typed fields: for display and for exports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lem_dcbm.json_types import JsonObject
from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.records.readings import (
    BEGIN,
    END,
    OBIS_EXPORT,
    OBIS_IMPORT,
    Reading,
    only,
    readings_of,
    transaction_counter,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordSummary:
    """The facts of one OCMF record; None where the record does not say (or not clearly)."""

    #: ``MS``: the meter's serial number.
    meter_serial: str | None
    #: The transaction counter of ``PG`` (``T61`` -> 61).
    pagination: int | None
    #: ``IT``: how the customer was identified (``ISO14443``, ``NONE``...).
    identification_type: str | None
    #: ``ID``: the identification (clientId at start).
    identification: str | None
    #: ``CI``: the EVSE id.
    evse_id: str | None
    #: ``TT``: the tariff text.
    tariff_text: str | None
    #: ``TM`` of the begin and end readings, as the meter wrote them.
    begin_time: str | None
    end_time: str | None
    #: Import (``1-0:1.8.0``) and export (``1-0:2.8.0``) registers in kWh.
    begin_import_kwh: float | None
    end_import_kwh: float | None
    begin_export_kwh: float | None
    end_export_kwh: float | None

    @property
    def energy_kwh(self) -> float | None:
        """Energy delivered: end minus begin import, in kWh (rounded to the meter's Wh)."""
        if self.begin_import_kwh is None or self.end_import_kwh is None:
            return None
        return round(self.end_import_kwh - self.begin_import_kwh, 3)

    @property
    def energy_wh(self) -> int | None:
        """Energy delivered in Wh."""
        energy = self.energy_kwh
        return None if energy is None else round(energy * 1000)

    def to_json(self) -> JsonObject:
        """Every field and the energy as a JSON object."""
        return {
            "meter_serial": self.meter_serial,
            "pagination": self.pagination,
            "identification_type": self.identification_type,
            "identification": self.identification,
            "evse_id": self.evse_id,
            "tariff_text": self.tariff_text,
            "begin_time": self.begin_time,
            "end_time": self.end_time,
            "begin_import_kwh": self.begin_import_kwh,
            "end_import_kwh": self.end_import_kwh,
            "begin_export_kwh": self.begin_export_kwh,
            "end_export_kwh": self.end_export_kwh,
            "energy_kwh": self.energy_kwh,
            "energy_wh": self.energy_wh,
        }


def summarize(record: str) -> RecordSummary:
    """The summary of ``record``; ``ValueError`` when it is not a readable OCMF record."""
    payload = parse_ocmf(record).payload
    readings = readings_of(payload)
    begin = only(readings, BEGIN, OBIS_IMPORT)
    end = only(readings, END, OBIS_IMPORT)
    return RecordSummary(
        meter_serial=_text(payload, "MS"),
        pagination=transaction_counter(payload),
        identification_type=_text(payload, "IT"),
        identification=_text(payload, "ID"),
        evse_id=_text(payload, "CI"),
        tariff_text=_text(payload, "TT"),
        begin_time=begin.time if begin else None,
        end_time=end.time if end else None,
        begin_import_kwh=_kwh(begin),
        end_import_kwh=_kwh(end),
        begin_export_kwh=_kwh(only(readings, BEGIN, OBIS_EXPORT)),
        end_export_kwh=_kwh(only(readings, END, OBIS_EXPORT)),
    )


def _text(payload: Mapping[str, object], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _kwh(reading: Reading | None) -> float | None:
    if reading is None:
        return None
    try:
        return reading.energy_kwh()
    except ValueError:
        return None
