"""The readings (``RD``) of an OCMF payload, with OCMF's inheritance rule applied.

A reading without ``TM`` or ``TX`` takes them from the reading before it; the LEM meter
relies on this (its export readings carry neither). Times are LEM's ``TM`` text,
``2025-10-26T12:50:00,000+0100 R``: local time, milliseconds after a comma, the UTC
offset and a flag for the clock's synchronisation state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

#: OBIS code of the energy delivered to the vehicle (import register).
OBIS_IMPORT = "1-0:1.8.0"
#: OBIS code of the energy fed back by the vehicle (export register).
OBIS_EXPORT = "1-0:2.8.0"
#: ``TX`` of the transaction's begin and end readings.
BEGIN = "B"
END = "E"

_TIME = re.compile(
    r"(?P<local>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})"
    r"(?:[,.](?P<fraction>\d{1,6}))?"
    r"(?:(?P<zulu>Z)|(?P<sign>[+-])(?P<hours>\d{2}):?(?P<minutes>\d{2}))"
    r"(?:\s+(?P<flag>[A-Z]))?"
)
_UNIT_TO_KWH = {"kWh": 1.0, "Wh": 0.001}
_PAGINATION = re.compile(r"T(\d+)")


@dataclass(frozen=True, slots=True)
class Reading:
    """One entry of ``RD`` with ``TM``/``TX`` inherited where the entry leaves them out."""

    #: Position in ``RD`` (0 for the first reading).
    index: int
    #: ``TM``, given or inherited; None when no reading so far had one.
    time: str | None
    #: ``TX``, given or inherited.
    kind: str | None
    #: ``RI``: the OBIS code of the register.
    obis: str | None
    #: The reading as the meter wrote it.
    fields: Mapping[str, Any]

    def energy_kwh(self) -> float:
        """``RV`` in kWh (``RU`` kWh or Wh); ``ValueError`` when it is not a number."""
        value = self.fields.get("RV")
        unit = self.fields.get("RU", "kWh")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"reading {self.index} has no numeric RV but {value!r}")
        if unit not in _UNIT_TO_KWH:
            raise ValueError(f"reading {self.index} has the unit RU {unit!r}, not kWh or Wh")
        return float(value) * _UNIT_TO_KWH[unit]

    def moment(self) -> datetime:
        """``TM`` as an aware datetime; ``ValueError`` when absent or unreadable."""
        if self.time is None:
            raise ValueError(f"reading {self.index} has no TM")
        return parse_meter_time(self.time)


def readings_of(payload: Mapping[str, object]) -> list[Reading]:
    """The payload's readings in order; ``ValueError`` when ``RD`` is not a list of objects."""
    raw = payload.get("RD")
    if not isinstance(raw, list) or not raw:
        raise ValueError("the payload has no readings (RD is missing, empty or not a list)")
    readings: list[Reading] = []
    time: str | None = None
    kind: str | None = None
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ValueError(f"reading {index} is not a JSON object")
        time = _text(entry.get("TM"), time)
        kind = _text(entry.get("TX"), kind)
        obis = entry.get("RI")
        readings.append(
            Reading(
                index=index,
                time=time,
                kind=kind,
                obis=obis if isinstance(obis, str) else None,
                fields=entry,
            )
        )
    return readings


def _text(value: object, inherited: str | None) -> str | None:
    return value if isinstance(value, str) else inherited


def select(readings: Sequence[Reading], kind: str, obis: str) -> list[Reading]:
    """The readings of one moment (``TX``) and one register (``RI``)."""
    return [r for r in readings if r.kind == kind and r.obis == obis]


def only(readings: Sequence[Reading], kind: str, obis: str) -> Reading | None:
    """The single reading of a moment and register, None when there is none or several."""
    found = select(readings, kind, obis)
    return found[0] if len(found) == 1 else None


def parse_meter_time(text: str) -> datetime:
    """An OCMF ``TM`` (``2025-10-26T12:50:00,000+0100 R``) as an aware datetime."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"TM {text!r} is not an OCMF time (like 2025-10-26T12:50:00,000+0100 R)")
    if match["zulu"]:
        offset = timedelta(0)
    else:
        offset = timedelta(hours=int(match["hours"]), minutes=int(match["minutes"]))
        if match["sign"] == "-":
            offset = -offset
    try:
        local = datetime.fromisoformat(match["local"])
        fraction = (match["fraction"] or "0").ljust(6, "0")
        return local.replace(microsecond=int(fraction), tzinfo=timezone(offset))
    except ValueError as exc:
        raise ValueError(f"TM {text!r} is not a valid time: {exc}") from exc


def transaction_counter(payload: Mapping[str, object]) -> int | None:
    """The number in the payload's ``PG`` (``T61`` -> 61); None when it is not like that."""
    value = payload.get("PG")
    match = _PAGINATION.fullmatch(value) if isinstance(value, str) else None
    return int(match[1]) if match else None
