"""Content checks of a signed OCMF record: is it this transaction's record, and sound?

A valid signature only says the meter wrote the record. These checks say whether it is
the record of the transaction that was asked for (meter serial, identification, EVSE,
pagination) and whether its readings make sense (one begin, one end, in order, status
``G``, no error flags), as the Transparenzsoftware, the OCMF specification and the LEM
manual (compare the cable id) ask. A failed check never discards a record: it is the
meter's signed truth and goes to the bill with the failures named.

Check names are stable strings: logs, the journal, exports and tests use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lem_dcbm.json_types import JsonObject
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from lem_dcbm.records.readings import (
    BEGIN,
    END,
    OBIS_EXPORT,
    OBIS_IMPORT,
    Reading,
    only,
    readings_of,
    select,
    transaction_counter,
)

#: Not a readable OCMF record; no other check runs.
FORMAT = "format"
#: The signature does not verify with the meter's key (checked only when a key is given).
SIGNATURE = "signature"
#: Not exactly one begin (``TX`` B) and one end (``TX`` E) reading per register.
READINGS = "readings"
#: The end reading lies before the begin reading in time or in energy.
ORDER = "order"
#: A reading's status ``ST`` is not ``G`` (good).
STATUS = "status"
#: A reading carries error flags (``EF`` not empty).
ERROR_FLAGS = "error_flags"
#: ``MS`` and ``GS`` differ, or differ from the meter's id.
METER = "meter"
#: ``ID`` is not the identification (clientId) sent at start.
IDENTIFICATION = "identification"
#: ``CI`` is not the EVSE id sent at start (or ``CT`` is not ``EVSEID``).
EVSE = "evse"
#: ``TT`` is not the tariff text sent at start.
TARIFF_TEXT = "tariff_text"
#: ``UC.UI`` of the begin reading is not the cable id sent at start.
CABLE = "cable"
#: ``PG`` is not the expected transaction pagination.
PAGINATION = "pagination"
#: ``PG`` does not follow the meter's previous transaction.
PAGINATION_ORDER = "pagination_order"

#: Every check, in the order they run.
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
#: Checks whose failure means the record is not this transaction's record at all.
IDENTITY_CHECKS = frozenset({FORMAT, METER, IDENTIFICATION, EVSE, PAGINATION})


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordExpectation:
    """What the record of one transaction must say; None leaves a field unchecked."""

    #: ``MS`` and ``GS`` must both equal it.
    meter_id: str | None = None
    #: ``ID`` must equal the clientId sent at start ("" = absent or empty).
    client_id: str | None = None
    #: ``CI`` must equal the evseId sent at start, with ``CT`` ``EVSEID``.
    evse_id: str | None = None
    #: ``TT`` must equal it ("" = ``TT`` absent or empty).
    tariff_text: str | None = None
    #: ``UC.UI`` of the begin reading.
    cable_id: int | None = None
    #: ``PG`` must be exactly ``T{pagination}``.
    pagination: int | None = None
    #: The number in ``PG`` must be greater (the meter's previous transaction).
    after_pagination: int | None = None


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """One failed check: its name and one line saying what was found and expected."""

    check: str
    detail: str

    def to_json(self) -> dict[str, str]:
        """``{"check": ..., "detail": ...}`` as the journal and the late-record topic hold it."""
        return {"check": self.check, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class RecordVerdict:
    """The outcome of :func:`check_record`."""

    #: True/False from the signature; None when no key was given or the record is unreadable.
    signature_valid: bool | None
    failures: tuple[CheckFailure, ...]

    @property
    def ok(self) -> bool:
        """No check failed and the signature is not known to be invalid."""
        return not self.failures and self.signature_valid is not False

    @property
    def identity_ok(self) -> bool:
        """No failure says this is another transaction's record."""
        return not any(failure.check in IDENTITY_CHECKS for failure in self.failures)

    @property
    def failed_checks(self) -> tuple[str, ...]:
        """The names of the failed checks, in check order."""
        return tuple(failure.check for failure in self.failures)

    def to_json(self) -> JsonObject:
        """The verdict as the journal stores it (``JournalEntry.data["verdict"]``)."""
        return {
            "signature_valid": self.signature_valid,
            "failed_checks": [failure.to_json() for failure in self.failures],
        }

    @classmethod
    def from_json(cls, value: object) -> RecordVerdict | None:
        """Read a stored verdict back; None when ``value`` is not one."""
        if not isinstance(value, Mapping):
            return None
        signature = value.get("signature_valid")
        failed = value.get("failed_checks", [])
        if not isinstance(signature, bool | None) or not isinstance(failed, list):
            return None
        failures = tuple(
            CheckFailure(str(item.get("check", "")), str(item.get("detail", "")))
            for item in failed
            if isinstance(item, Mapping)
        )
        return cls(signature, failures)


def check_record(
    record: str, expected: RecordExpectation, public_key_ocmf: str | None = None
) -> RecordVerdict:
    """Run every check on ``record``; the signature only when a key is given."""
    try:
        payload = parse_ocmf(record).payload
        readings = readings_of(payload)
    except ValueError as exc:
        return RecordVerdict(None, (CheckFailure(FORMAT, str(exc)),))
    failures: list[CheckFailure] = []
    signature_valid: bool | None = None
    if public_key_ocmf is not None:
        signature_valid, detail = _signature(record, public_key_ocmf)
        if detail:
            failures.append(CheckFailure(SIGNATURE, detail))
    content = _Content(payload, readings)
    for name, check in _CONTENT_CHECKS:
        detail = check(content, expected)
        if detail:
            failures.append(CheckFailure(name, detail))
    return RecordVerdict(signature_valid, tuple(failures))


def checks_run(expected: RecordExpectation, with_key: bool) -> tuple[str, ...]:
    """The checks :func:`check_record` runs with ``expected`` (and a key when ``with_key``)."""
    wanted = {
        SIGNATURE: with_key,
        IDENTIFICATION: expected.client_id is not None,
        EVSE: expected.evse_id is not None,
        TARIFF_TEXT: expected.tariff_text is not None,
        CABLE: expected.cable_id is not None,
        PAGINATION: expected.pagination is not None,
        PAGINATION_ORDER: expected.after_pagination is not None,
    }
    return tuple(check for check in CHECKS if wanted.get(check, True))


def same_session(a: str, b: str) -> bool:
    """Both records are of one meter session: equal ``MS``, ``PG`` and begin ``TM``."""
    try:
        first, second = _session_key(a), _session_key(b)
    except ValueError:
        return False
    return None not in first and first == second


def pagination_of(record: str) -> int | None:
    """The transaction counter in ``PG`` (``T61`` -> 61); None when unreadable."""
    try:
        return transaction_counter(parse_ocmf(record).payload)
    except ValueError:
        return None


def _session_key(record: str) -> tuple[object, object, object]:
    payload = parse_ocmf(record).payload
    begin = next((r for r in readings_of(payload) if r.kind == BEGIN), None)
    return payload.get("MS"), payload.get("PG"), begin.time if begin else None


def _signature(record: str, key: str) -> tuple[bool, str]:
    try:
        if verify_ocmf(record, key):
            return True, ""
    except ValueError as exc:
        return False, f"cannot be verified: {exc}"
    return False, "the signature does not verify with the meter's public key"


@dataclass(frozen=True, slots=True)
class _Content:
    payload: Mapping[str, Any]
    readings: list[Reading]

    def text(self, key: str) -> str:
        """A string field, "" when absent; a non-string shows as its JSON-ish repr."""
        value = self.payload.get(key)
        if value is None:
            return ""
        return value if isinstance(value, str) else repr(value)


def _readings(content: _Content, expected: RecordExpectation) -> str:
    problems = []
    for kind, name in ((BEGIN, "begin"), (END, "end")):
        count = len(select(content.readings, kind, OBIS_IMPORT))
        if count != 1:
            problems.append(f"{count} {name} import readings (TX {kind}, RI {OBIS_IMPORT})")
        export = len(select(content.readings, kind, OBIS_EXPORT))
        if export > 1:
            problems.append(f"{export} {name} export readings (TX {kind}, RI {OBIS_EXPORT})")
    return "; ".join(problems) + ", expected one each" if problems else ""


def _order(content: _Content, expected: RecordExpectation) -> str:
    # Without exactly one begin and end reading, READINGS already says what is wrong.
    begin = only(content.readings, BEGIN, OBIS_IMPORT)
    end = only(content.readings, END, OBIS_IMPORT)
    if begin is None or end is None:
        return ""
    try:
        if end.moment() < begin.moment():
            return f"end time {end.time} lies before begin time {begin.time}"
        pairs = [(begin, end, "import")]
        begin_export = only(content.readings, BEGIN, OBIS_EXPORT)
        end_export = only(content.readings, END, OBIS_EXPORT)
        if begin_export and end_export:
            pairs.append((begin_export, end_export, "export"))
        for first, last, register in pairs:
            if last.energy_kwh() < first.energy_kwh():
                return (
                    f"end {register} value {last.fields['RV']} {last.fields.get('RU', 'kWh')} "
                    f"is below begin value {first.fields['RV']} {first.fields.get('RU', 'kWh')}"
                )
    except ValueError as exc:
        return str(exc)
    return ""


def _status(content: _Content, expected: RecordExpectation) -> str:
    bad = [
        f"reading {r.index} ST {r.fields.get('ST')!r}"
        for r in content.readings
        if r.fields.get("ST") != "G"
    ]
    return ", ".join(bad) + ", expected 'G'" if bad else ""


def _error_flags(content: _Content, expected: RecordExpectation) -> str:
    bad = [
        f"reading {r.index} EF {r.fields['EF']!r}"
        for r in content.readings
        if "EF" in r.fields and r.fields["EF"] != ""
    ]
    return ", ".join(bad) + ", expected none" if bad else ""


def _meter(content: _Content, expected: RecordExpectation) -> str:
    serial, gateway = content.payload.get("MS"), content.payload.get("GS")
    if not isinstance(serial, str) or not serial:
        return f"MS {serial!r} is not a meter serial"
    if gateway is not None and gateway != serial:
        return f"GS {gateway!r} differs from MS {serial!r}"
    if expected.meter_id is not None and serial != expected.meter_id:
        return f"MS {serial!r}, expected the meter {expected.meter_id!r}"
    return ""


def _identification(content: _Content, expected: RecordExpectation) -> str:
    found = _equal(content, "ID", expected.client_id)
    if found and expected.client_id and "," not in expected.client_id:
        # lem-dcbm's records carry both parts: a transaction id alone never matches.
        return (
            f"{found} (lem-dcbm writes ID as '<identification data>,<transaction id>', "
            "cut to 37 bytes: expect the whole ID)"
        )
    return found


def _evse(content: _Content, expected: RecordExpectation) -> str:
    if expected.evse_id is None:
        return ""
    found = _equal(content, "CI", expected.evse_id)
    if found or not expected.evse_id:
        return found
    kind = content.payload.get("CT")
    return "" if kind == "EVSEID" else f"CT {kind!r}, expected 'EVSEID'"


def _tariff_text(content: _Content, expected: RecordExpectation) -> str:
    return _equal(content, "TT", expected.tariff_text)


def _equal(content: _Content, key: str, expected: str | None) -> str:
    if expected is None:
        return ""
    found = content.text(key)
    return "" if found == expected else f"{key} {found!r}, expected {expected!r}"


def _cable(content: _Content, expected: RecordExpectation) -> str:
    if expected.cable_id is None:
        return ""
    begin = next((r for r in content.readings if r.kind == BEGIN), None)
    compensation = begin.fields.get("UC") if begin else None
    ident = compensation.get("UI") if isinstance(compensation, Mapping) else None
    if isinstance(ident, bool) or ident != expected.cable_id:
        return f"begin reading UC.UI {ident!r}, expected cable id {expected.cable_id}"
    return ""


def _pagination_equal(content: _Content, expected: RecordExpectation) -> str:
    if expected.pagination is None:
        return ""
    wanted = f"T{expected.pagination}"
    found = content.payload.get("PG")
    return "" if found == wanted else f"PG {found!r}, expected {wanted!r}"


def _pagination_order(content: _Content, expected: RecordExpectation) -> str:
    if expected.after_pagination is None:
        return ""
    number = transaction_counter(content.payload)
    if number is None:
        return f"PG {content.payload.get('PG')!r} is not a transaction counter like 'T61'"
    if number <= expected.after_pagination:
        return (
            f"PG 'T{number}' does not follow the previous transaction "
            f"'T{expected.after_pagination}'"
        )
    return ""


_CONTENT_CHECKS: tuple[tuple[str, Callable[[_Content, RecordExpectation], str]], ...] = (
    (READINGS, _readings),
    (ORDER, _order),
    (STATUS, _status),
    (ERROR_FLAGS, _error_flags),
    (METER, _meter),
    (IDENTIFICATION, _identification),
    (EVSE, _evse),
    (TARIFF_TEXT, _tariff_text),
    (CABLE, _cable),
    (PAGINATION, _pagination_equal),
    (PAGINATION_ORDER, _pagination_order),
)
