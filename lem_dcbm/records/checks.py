"""Content checks of a signed OCMF record: what a bill may rely on beyond the signature.

The checks are those the Transparenzsoftware and the OCMF specification apply, plus the
LEM manual's rule to compare the cable id: one begin and one end reading, the end not
before the begin in time or value, status ``G`` and no error flags on every reading, one
meter serial, and the identification, EVSE, tariff text, cable and record number the
transaction was started with. Readings inherit ``TM`` and ``TX`` from the reading before
them when they omit them (the OCMF rule LEM's records rely on).

Pure functions: no I/O; a record that cannot be read fails the ``format`` check alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lem_dcbm.ocmf import parse_ocmf, verify_ocmf

FORMAT = "format"
SIGNATURE = "signature"
READINGS = "readings"
ORDER = "order"
STATUS = "status"
ERROR_FLAGS = "error_flags"
METER = "meter"
IDENTIFICATION = "identification"
EVSE = "evse"
TARIFF_TEXT = "tariff_text"
CABLE = "cable"
PAGINATION = "pagination"
PAGINATION_ORDER = "pagination_order"
#: Every check, in the order they are reported.
CHECKS = (
    FORMAT,
    SIGNATURE,
    READINGS,
    ORDER,
    STATUS,
    ERROR_FLAGS,
    METER,
    IDENTIFICATION,
    EVSE,
    TARIFF_TEXT,
    CABLE,
    PAGINATION,
    PAGINATION_ORDER,
)

OBIS_IMPORT = "1-0:1.8.0"
OBIS_EXPORT = "1-0:2.8.0"
_PAGINATION = re.compile(r"T(\d+)")
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:,(\d{1,6}))?([+-]\d\d:?\d\d|Z)")


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordExpectation:
    """What a transaction's record must say; ``None`` leaves a check out."""

    #: ``MS`` and ``GS`` must both equal it.
    meter_id: str | None = None
    #: ``ID`` must equal the ``clientId`` sent at the start.
    client_id: str | None = None
    #: ``CI`` must equal the ``evseId`` sent at the start.
    evse_id: str | None = None
    #: ``TT`` must equal it ("" means absent or empty).
    tariff_text: str | None = None
    #: ``UC.UI`` of the begin reading must equal it.
    cable_id: int | None = None
    #: ``PG`` must be exactly ``T{pagination}``.
    pagination: int | None = None
    #: The number in ``PG`` must be greater (the meter's previous transaction).
    after_pagination: int | None = None


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """One failed check: its name and what was found against what was expected."""

    check: str
    detail: str


@dataclass(frozen=True, slots=True)
class RecordVerdict:
    """The result of every check on one record."""

    #: None when no key was given or the record could not be read.
    signature_valid: bool | None
    failures: tuple[CheckFailure, ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.failures and self.signature_valid is not False

    @property
    def failed_checks(self) -> tuple[str, ...]:
        """The names of the failed checks."""
        return tuple(failure.check for failure in self.failures)


@dataclass(frozen=True, slots=True)
class Reading:
    """One ``RD`` entry with the ``TM``/``TX`` it inherits."""

    time: str | None
    kind: str | None
    fields: Mapping[str, Any]


def readings_of(payload: Mapping[str, Any]) -> list[Reading]:
    """The payload's readings, each with the time and type it states or inherits."""
    raw = payload.get("RD")
    if not isinstance(raw, list):
        return []
    readings: list[Reading] = []
    time: str | None = None
    kind: str | None = None
    for entry in raw:
        if not isinstance(entry, Mapping):
            continue
        time = entry["TM"] if isinstance(entry.get("TM"), str) else time
        kind = entry["TX"] if isinstance(entry.get("TX"), str) else kind
        readings.append(Reading(time, kind, entry))
    return readings


def reading_time(text: str) -> datetime | None:
    """Parse an OCMF ``TM`` (``2025-10-26T12:50:00,000+0100 R``); None if it does not read."""
    match = _TIME.match(text)
    if match is None:
        return None
    stamp, fraction, offset = match.groups()
    offset = "+00:00" if offset == "Z" else offset
    try:
        return datetime.fromisoformat(f"{stamp}.{(fraction or '0').ljust(6, '0')}{offset}")
    except ValueError:
        return None


def pagination_of(record: str) -> int | None:
    """The number in the record's ``PG`` (``T61`` -> 61), or None."""
    try:
        payload = parse_ocmf(record).payload
    except ValueError:
        return None
    return _pagination(payload)


def _pagination(payload: Mapping[str, Any]) -> int | None:
    value = payload.get("PG")
    match = _PAGINATION.fullmatch(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def same_session(a: str, b: str) -> bool:
    """True when two records are of the same transaction: same meter, ``PG`` and begin."""
    try:
        first, second = parse_ocmf(a).payload, parse_ocmf(b).payload
    except ValueError:
        return False

    def begin(payload: Mapping[str, Any]) -> str | None:
        return next((r.time for r in readings_of(payload) if r.kind == "B"), None)

    return (
        first.get("MS") == second.get("MS")
        and _pagination(first) is not None
        and _pagination(first) == _pagination(second)
        and begin(first) == begin(second)
    )


def check_record(
    record: str, expected: RecordExpectation, public_key_ocmf: str | None = None
) -> RecordVerdict:
    """Run every check on ``record``; the signature only when a key is given."""
    try:
        payload = parse_ocmf(record).payload
    except ValueError as err:
        return RecordVerdict(None, (CheckFailure(FORMAT, str(err)),))
    failures: list[CheckFailure] = []
    valid: bool | None = None
    if public_key_ocmf:
        try:
            valid = verify_ocmf(record, public_key_ocmf)
        except ValueError as err:
            failures.append(CheckFailure(SIGNATURE, f"cannot be checked: {err}"))
        else:
            if not valid:
                failures.append(CheckFailure(SIGNATURE, "does not verify with publicKeyOcmf"))
    readings = readings_of(payload)
    failures += _reading_checks(readings)
    failures += _identity_checks(payload, readings, expected)
    return RecordVerdict(valid, tuple(failures))


def _reading_checks(readings: list[Reading]) -> list[CheckFailure]:
    failures: list[CheckFailure] = []
    begins = [r for r in readings if r.kind == "B"]
    ends = [r for r in readings if r.kind == "E"]
    begin_times = {r.time for r in begins}
    end_times = {r.time for r in ends}
    if len(begin_times) != 1 or len(end_times) != 1:
        failures.append(
            CheckFailure(
                READINGS,
                f"{len(begin_times)} begin and {len(end_times)} end moments; one each expected",
            )
        )
    else:
        failures += _order(begins, ends)
    bad_states = sorted({str(r.fields.get("ST")) for r in readings if r.fields.get("ST") != "G"})
    if bad_states:
        failures.append(CheckFailure(STATUS, f"reading status {', '.join(bad_states)}; G expected"))
    flags = sorted({str(r.fields["EF"]) for r in readings if r.fields.get("EF")})
    if flags:
        failures.append(CheckFailure(ERROR_FLAGS, f"error flags {', '.join(flags)} are set"))
    return failures


def _order(begins: list[Reading], ends: list[Reading]) -> list[CheckFailure]:
    problems: list[str] = []
    begin_at = reading_time(begins[0].time or "")
    end_at = reading_time(ends[0].time or "")
    if begin_at is None or end_at is None:
        problems.append(f"times {begins[0].time!r} and {ends[0].time!r} do not read")
    elif end_at < begin_at:
        problems.append(f"the end {ends[0].time} lies before the begin {begins[0].time}")
    for obis in (OBIS_IMPORT, OBIS_EXPORT):
        first = _value(begins, obis)
        last = _value(ends, obis)
        if first is not None and last is not None and last < first:
            problems.append(f"{obis} falls from {first} to {last}")
        elif obis == OBIS_IMPORT and (first is None or last is None):
            problems.append(f"no {obis} value at begin and end")
    return [CheckFailure(ORDER, "; ".join(problems))] if problems else []


def _value(readings: list[Reading], obis: str) -> float | None:
    for reading in readings:
        value = reading.fields.get("RV")
        if reading.fields.get("RI") == obis and isinstance(value, int | float):
            return float(value)
    return None


def _identity_checks(
    payload: Mapping[str, Any], readings: list[Reading], expected: RecordExpectation
) -> list[CheckFailure]:
    failures: list[CheckFailure] = []
    serial, gateway = payload.get("MS"), payload.get("GS")
    if serial != gateway or (expected.meter_id is not None and serial != expected.meter_id):
        wanted = expected.meter_id if expected.meter_id is not None else "equal values"
        failures.append(CheckFailure(METER, f"MS {serial!r} and GS {gateway!r}; {wanted} expected"))
    compared = (
        (IDENTIFICATION, "ID", expected.client_id),
        (EVSE, "CI", expected.evse_id),
    )
    for check, key, wanted_text in compared:
        if wanted_text is not None and payload.get(key) != wanted_text:
            failures.append(
                CheckFailure(check, f"{key} {payload.get(key)!r}; {wanted_text!r} was sent")
            )
    if expected.tariff_text is not None and (payload.get("TT") or "") != expected.tariff_text:
        failures.append(
            CheckFailure(
                TARIFF_TEXT, f"TT {payload.get('TT')!r}; {expected.tariff_text!r} was sent"
            )
        )
    if expected.cable_id is not None:
        cable = readings[0].fields.get("UC") if readings else None
        found = cable.get("UI") if isinstance(cable, Mapping) else None
        if found != expected.cable_id:
            failures.append(
                CheckFailure(CABLE, f"UC.UI {found!r}; cable id {expected.cable_id} was sent")
            )
    number = _pagination(payload)
    if expected.pagination is not None and number != expected.pagination:
        failures.append(
            CheckFailure(
                PAGINATION,
                f"PG {payload.get('PG')!r}; T{expected.pagination} expected (the begin record's)",
            )
        )
    if expected.after_pagination is not None and (
        number is None or number <= expected.after_pagination
    ):
        failures.append(
            CheckFailure(
                PAGINATION_ORDER,
                f"PG {payload.get('PG')!r} is not above T{expected.after_pagination}, "
                "the meter's number before this transaction",
            )
        )
    return failures
