"""TEMPORARY minimal stand-in, replaced by the real module."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lem_dcbm.ocmf import parse_ocmf, verify_ocmf

IDENTITY_CHECKS = frozenset({"format", "meter", "identification", "evse", "pagination"})


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordExpectation:
    meter_id: str | None = None
    client_id: str | None = None
    evse_id: str | None = None
    tariff_text: str | None = None
    cable_id: int | None = None
    pagination: int | None = None
    after_pagination: int | None = None


@dataclass(frozen=True, slots=True)
class CheckFailure:
    check: str
    detail: str


@dataclass(frozen=True, slots=True)
class RecordVerdict:
    signature_valid: bool | None
    failures: tuple[CheckFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures and self.signature_valid is not False

    @property
    def failed_checks(self) -> tuple[str, ...]:
        return tuple(f.check for f in self.failures)


def _tm(text: str) -> datetime:
    stamp = text.split(" ")[0].replace(",", ".")
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")


def pagination_of(record: str) -> int | None:
    try:
        pg = parse_ocmf(record).payload.get("PG", "")
    except ValueError:
        return None
    return int(pg[1:]) if isinstance(pg, str) and pg[1:].isdigit() else None


def check_record(
    record: str, expected: RecordExpectation, public_key_ocmf: str | None = None
) -> RecordVerdict:
    try:
        payload: dict[str, Any] = parse_ocmf(record).payload
    except ValueError as err:
        return RecordVerdict(None, (CheckFailure("format", str(err)),))
    failures: list[CheckFailure] = []
    valid = None
    if public_key_ocmf:
        valid = verify_ocmf(record, public_key_ocmf)
        if not valid:
            failures.append(CheckFailure("signature", "does not verify"))
    readings = payload.get("RD", [])
    tx = None
    tm = None
    seen = []
    for r in readings:
        tx = r.get("TX", tx)
        tm = r.get("TM", tm)
        seen.append((tx, tm, r))
    b = [s for s in seen if s[0] == "B" and s[2].get("RI") == "1-0:1.8.0"]
    e = [s for s in seen if s[0] == "E" and s[2].get("RI") == "1-0:1.8.0"]
    if len(b) != 1 or len(e) != 1:
        failures.append(CheckFailure("readings", "not one begin and one end"))
    else:
        if _tm(e[0][1]) < _tm(b[0][1]) or e[0][2]["RV"] < b[0][2]["RV"]:
            failures.append(CheckFailure("order", "end before begin"))
    if any(r.get("ST", "G") != "G" for r in readings):
        failures.append(CheckFailure("status", "not G"))
    if any(r.get("EF") for r in readings):
        failures.append(CheckFailure("error_flags", "set"))
    if payload.get("MS") != payload.get("GS") or (
        expected.meter_id and payload.get("MS") != expected.meter_id
    ):
        failures.append(CheckFailure("meter", "serial differs"))
    if expected.client_id is not None and payload.get("ID") != expected.client_id:
        failures.append(CheckFailure("identification", "ID differs"))
    if expected.evse_id is not None and payload.get("CI") != expected.evse_id:
        failures.append(CheckFailure("evse", "CI differs"))
    if expected.tariff_text is not None and payload.get("TT", "") != expected.tariff_text:
        failures.append(CheckFailure("tariff_text", "TT differs"))
    if (
        expected.cable_id is not None
        and readings
        and readings[0].get("UC", {}).get("UI") != expected.cable_id
    ):
        failures.append(CheckFailure("cable", "UI differs"))
    pg = pagination_of(record)
    if expected.pagination is not None and pg != expected.pagination:
        failures.append(CheckFailure("pagination", f"PG {pg} != {expected.pagination}"))
    if expected.after_pagination is not None and (pg is None or pg <= expected.after_pagination):
        failures.append(CheckFailure("pagination_order", f"PG {pg} <= {expected.after_pagination}"))
    return RecordVerdict(valid, tuple(failures))
