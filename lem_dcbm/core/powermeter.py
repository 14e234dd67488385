"""Mapping a live measurement to EVerest's ``powermeter/Powermeter`` type."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from lem_dcbm.clock import rfc3339
from lem_dcbm.core.results import SignedRecord
from lem_dcbm.meter.models import LiveMeasure


def meter_timestamp_rfc3339(timestamp: str, fallback: datetime) -> str:
    """Convert the meter's ISO 8601 timestamp (with offset) to RFC 3339 UTC.

    A timestamp without offset or that does not parse is replaced by ``fallback``:
    EVerest requires a valid date-time, and a missing field would fail the schema.
    """
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return rfc3339(fallback)
    if moment.tzinfo is None:
        return rfc3339(fallback)
    return rfc3339(moment.astimezone(timezone.utc))


def to_powermeter(
    measure: LiveMeasure, meter_id: str, now: datetime, *, signed: SignedRecord | None = None
) -> dict[str, Any]:
    """Build the ``powermeter`` var from a live measurement (kW -> W, kWh -> Wh).

    ``signed``: a record riding on the var (``core.record_rider``), as its
    ``signed_meter_value``.
    """
    value: dict[str, Any] = {
        "timestamp": meter_timestamp_rfc3339(measure.timestamp, now),
        "meter_id": meter_id,
        "energy_Wh_import": {"total": round(measure.energy_import_kwh * 1000.0, 3)},
        "energy_Wh_export": {"total": round(measure.energy_export_kwh * 1000.0, 3)},
        "power_W": {"total": round(measure.power_kw * 1000.0, 3)},
        "voltage_V": {"DC": measure.voltage_v},
        "current_A": {"DC": measure.current_a},
        "temperatures": [
            {
                "temperature": measure.temperature_h_c,
                "identification": "temperatureH",
                "location": "temperatureH",
            },
            {
                "temperature": measure.temperature_l_c,
                "identification": "temperatureL",
                "location": "temperatureL",
            },
        ],
    }
    if signed is not None:
        value["signed_meter_value"] = signed_meter_value(signed)
    return value


def signed_meter_value(record: SignedRecord) -> dict[str, Any]:
    """A ``units_signed/SignedMeterValue`` holding an OCMF record unchanged."""
    return {
        "signed_meter_data": record.ocmf,
        "signing_method": "",
        "encoding_method": "OCMF",
        "public_key": record.public_key_ocmf,
    }
