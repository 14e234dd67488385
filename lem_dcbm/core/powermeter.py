"""A live measurement as the core's ``PowermeterValue`` (kW -> W, kWh -> Wh, UTC time)."""

from __future__ import annotations

from datetime import datetime, timezone

from lem_dcbm.core.results import PowermeterValue, SignedRecord
from lem_dcbm.meter.models import LiveMeasure


def meter_timestamp(timestamp: str, fallback: datetime) -> datetime:
    """The meter's ISO 8601 timestamp (with offset) in UTC.

    A timestamp without offset or that does not parse is replaced by ``fallback``:
    EVerest requires a valid date-time, and a missing field would fail the schema.
    """
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return fallback
    if moment.tzinfo is None:
        return fallback
    return moment.astimezone(timezone.utc)


def powermeter_value(
    measure: LiveMeasure, meter_id: str, now: datetime, *, signed: SignedRecord | None = None
) -> PowermeterValue:
    """The measurement in the core's terms; ``now`` stands in for a bad meter timestamp.

    ``signed``: a record riding on the var (``core.record_rider``).
    """
    return PowermeterValue(
        timestamp=meter_timestamp(measure.timestamp, now),
        meter_id=meter_id,
        energy_import_wh=round(measure.energy_import_kwh * 1000.0, 3),
        energy_export_wh=round(measure.energy_export_kwh * 1000.0, 3),
        power_w=round(measure.power_kw * 1000.0, 3),
        voltage_v=measure.voltage_v,
        current_a=measure.current_a,
        temperature_h_c=measure.temperature_h_c,
        temperature_l_c=measure.temperature_l_c,
        signed=signed,
    )
