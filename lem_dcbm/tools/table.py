"""Rendering ``powermeter`` values as rows of a small text table."""

from __future__ import annotations

COLUMNS = (
    ("time (UTC)", 24),
    ("import Wh", 12),
    ("export Wh", 10),
    ("power W", 10),
    ("voltage V", 10),
    ("current A", 10),
    ("temp H/L C", 12),
)


def header() -> str:
    """The table's header line."""
    return " ".join(name.rjust(width) for name, width in COLUMNS)


def _total(value: object, key: str) -> object:
    part = value.get(key) if isinstance(value, dict) else None
    return part.get("total", part.get("DC")) if isinstance(part, dict) else None


def _fmt(number: object, digits: int = 1) -> str:
    return f"{number:.{digits}f}" if isinstance(number, (int, float)) else "-"


def row(value: object) -> str:
    """One line for one ``powermeter`` publication; missing fields show as '-'."""
    if not isinstance(value, dict):
        return "(not a powermeter value)"
    temps = value.get("temperatures") or []
    temp_text = "/".join(_fmt(t.get("temperature")) for t in temps if isinstance(t, dict)) or "-"
    cells = (
        str(value.get("timestamp", "-")),
        _fmt(_total(value, "energy_Wh_import")),
        _fmt(_total(value, "energy_Wh_export")),
        _fmt(_total(value, "power_W")),
        _fmt(_total(value, "voltage_V")),
        _fmt(_total(value, "current_A")),
        temp_text,
    )
    return " ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
