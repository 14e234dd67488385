"""What ``lem-dcbm meter`` shows: reports made from the meter's answers, as JSON and as text.

Pure functions: the answers (already parsed by the meter client) and the local time go
in, a JSON-ready dict comes out, and a renderer turns that dict into the readable table.
The ``--json`` output is exactly the dict, so a script sees what a person sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TypedDict

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lem_dcbm.core.health_monitor import HEALTH_BITS
from lem_dcbm.json_types import JsonObject
from lem_dcbm.meter.models import ERROR_BITS, STATUS_BITS, LiveMeasure, MeterStatus
from lem_dcbm.meter.tls import certificate_der, sha256_fingerprint
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.records.summary import summarize

#: Events the meter's logbook holds (operation manual: "about 40 000"); full stops the meter.
LOGBOOK_CAPACITY = 40_000
_MEANINGS = {bit.name: bit for bit in HEALTH_BITS}
_LABEL_WIDTH = 26


class BitRow(TypedDict):
    """One status or error bit as the meter reported it."""

    bit: int | None
    name: str
    value: bool
    problem: bool
    meaning: str


class BitsFacts(TypedDict):
    """A bit field: its value and each bit."""

    value: int
    bits: list[BitRow]


class LogbookFacts(TypedDict):
    """How full the meter's logbook is."""

    entries: int | None
    capacity: int
    full: bool | None


class StatusReport(TypedDict):
    url: str
    meter_id: str
    firmware: str
    api: str
    meter_time: str
    local_time: str
    clock_skew_s: float | None
    time_sync_ok: bool
    transaction_ongoing: bool
    stored_transactions: int | None
    index_of_last_transaction: int | None
    logbook: LogbookFacts
    status: BitsFacts
    errors: BitsFacts
    problems: list[str]


class LiveRow(TypedDict):
    """One ``meter live`` row in the meter's units."""

    timestamp: str
    voltage_v: float
    current_a: float
    power_kw: float
    energy_import_kwh: float
    energy_export_kwh: float
    temperature_h_c: float
    temperature_l_c: float


class _CertificateFacts(TypedDict):
    """``meter cert``: the served certificate's facts."""

    sha256: str
    subject: str
    issuer: str
    self_signed: bool
    serial: str
    key_type: str
    key_bits: int | None
    not_before: str
    not_after: str
    valid_now: bool
    days_left: int
    pinned_matches: bool | None
    pem: str


class CertificateReport(_CertificateFacts, total=False):
    """The certificate's facts, and what ``meter cert`` did with it."""

    #: Also read from the TLS handshake, where it matched ``/v1/certificate``.
    from_handshake: bool
    #: Where ``--out`` wrote it.
    written_to: str


def clock_skew_s(meter_time: str, local_now: datetime) -> float | None:
    """Meter clock minus this machine's clock in seconds; None when the time is unreadable."""
    try:
        moment = datetime.fromisoformat(meter_time.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return round((moment - local_now).total_seconds(), 1)


def _decoded(names: Sequence[str], bits: Mapping[str, bool], in_errors: bool) -> list[BitRow]:
    """Each bit the meter reported, in bit order, with whether it is a problem and why."""
    rows: list[BitRow] = []
    ordered = [name for name in names if name in bits] + [n for n in bits if n not in names]
    for name in ordered:
        watched = _MEANINGS.get(name)
        problem = bool(
            watched and watched.in_errors == in_errors and bits[name] == watched.bad_value
        )
        rows.append(
            {
                "bit": names.index(name) if name in names else None,
                "name": name,
                "value": bits[name],
                "problem": problem,
                "meaning": watched.meaning if watched and problem else "",
            }
        )
    return rows


def status_report(
    status: MeterStatus,
    *,
    url: str,
    api_generation: str,
    local_now: datetime,
    logbook_entries: int | None,
) -> StatusReport:
    """``meter status``: identity, firmware, API, clock, bits, storage and logbook."""
    status_bits = _decoded(STATUS_BITS, status.bits, in_errors=False)
    error_bits = _decoded(ERROR_BITS, status.error_bits, in_errors=True)
    problems = [row for row in [*status_bits, *error_bits] if row["problem"]]
    return {
        "url": url,
        "meter_id": status.meter_id,
        "firmware": status.firmware_version,
        "api": api_generation,
        "meter_time": status.time,
        "local_time": local_now.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "clock_skew_s": clock_skew_s(status.time, local_now),
        "time_sync_ok": status.time_sync_ok,
        "transaction_ongoing": status.transaction_ongoing,
        "stored_transactions": status.number_of_stored_transactions,
        "index_of_last_transaction": status.index_of_last_transaction,
        "logbook": {
            "entries": logbook_entries,
            "capacity": LOGBOOK_CAPACITY,
            "full": status.error_bits.get("logbookIsFull"),
        },
        "status": {"value": status.value, "bits": status_bits},
        "errors": {"value": status.error_value, "bits": error_bits},
        "problems": [f"{row['name']}: {row['meaning']}" for row in problems],
    }


def _lines(pairs: Sequence[tuple[str, object]]) -> list[str]:
    return [f"{label:<{_LABEL_WIDTH}}{_text(value)}" for label, value in pairs]


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render_status(report: StatusReport) -> str:
    """The status report as a readable table."""
    skew = report["clock_skew_s"]
    logbook = report["logbook"]
    entries = logbook["entries"]
    fill = "-" if entries is None else f"{entries} of about {logbook['capacity']}"
    lines = _lines(
        [
            ("meter", report["url"]),
            ("meter id", report["meter_id"]),
            ("firmware", report["firmware"]),
            ("API generation", report["api"]),
            ("meter time", report["meter_time"]),
            ("clock skew", "-" if skew is None else f"{skew:+.1f} s (meter minus this machine)"),
            ("time sync valid", report["time_sync_ok"]),
            ("transaction running", report["transaction_ongoing"]),
            ("stored transactions", report["stored_transactions"]),
            ("last transaction index", report["index_of_last_transaction"]),
            ("logbook entries", fill),
            ("logbook full", logbook["full"]),
        ]
    )
    for title, field in (("status", report["status"]), ("errors", report["errors"])):
        lines.append("")
        lines.append(f"{title} bits (value {field['value']})")
        for row in field["bits"]:
            bit = "?" if row["bit"] is None else str(row["bit"])
            verdict = f"PROBLEM: {row['meaning']}" if row["problem"] else "ok"
            lines.append(f"  {bit:>2} {row['name']:<28}{_text(row['value']):<5}{verdict}")
    lines.append("")
    lines.append(
        "problems: " + ("none" if not report["problems"] else str(len(report["problems"])))
    )
    lines.extend(f"  {problem}" for problem in report["problems"])
    return "\n".join(lines)


LIVE_COLUMNS = (
    ("meter time", 25),
    ("voltage V", 10),
    ("current A", 10),
    ("power kW", 10),
    ("import kWh", 12),
    ("export kWh", 12),
    ("temp H/L C", 12),
)


def live_row(live: LiveMeasure) -> LiveRow:
    """One ``meter live`` row in the meter's units."""
    return {
        "timestamp": live.timestamp,
        "voltage_v": live.voltage_v,
        "current_a": live.current_a,
        "power_kw": live.power_kw,
        "energy_import_kwh": live.energy_import_kwh,
        "energy_export_kwh": live.energy_export_kwh,
        "temperature_h_c": live.temperature_h_c,
        "temperature_l_c": live.temperature_l_c,
    }


def live_header() -> str:
    """The header line of the live table."""
    return " ".join(name.rjust(width) for name, width in LIVE_COLUMNS)


def render_live_row(row: LiveRow) -> str:
    """One live row as a table line."""
    cells = (
        str(row["timestamp"]),
        f"{row['voltage_v']:.1f}",
        f"{row['current_a']:.1f}",
        f"{row['power_kw']:.3f}",
        f"{row['energy_import_kwh']:.3f}",
        f"{row['energy_export_kwh']:.3f}",
        f"{row['temperature_h_c']:.1f}/{row['temperature_l_c']:.1f}",
    )
    return " ".join(cell.rjust(width) for cell, (_, width) in zip(cells, LIVE_COLUMNS, strict=True))


def certificate_report(pem: str, *, local_now: datetime, pinned_pem: str = "") -> CertificateReport:
    """``meter cert``: fingerprint, key, validity; whether it is the pinned one if one is given."""
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_type, key_bits = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type, key_bits = f"EC {key.curve.name}", key.key_size
    else:
        key_type, key_bits = type(key).__name__, None
    fingerprint = sha256_fingerprint(certificate_der(pem))
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    report: CertificateReport = {
        "sha256": fingerprint,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "self_signed": cert.subject == cert.issuer,
        "serial": format(cert.serial_number, "X"),
        "key_type": key_type,
        "key_bits": key_bits,
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "valid_now": not_before <= local_now <= not_after,
        "days_left": (not_after - local_now).days,
        "pinned_matches": None,
        "pem": pem,
    }
    if pinned_pem:
        report["pinned_matches"] = sha256_fingerprint(certificate_der(pinned_pem)) == fingerprint
    return report


def render_certificate(report: CertificateReport) -> str:
    """The certificate report as a readable table (without the PEM)."""
    pairs: list[tuple[str, object]] = [
        ("SHA-256 fingerprint", report["sha256"]),
        ("subject", report["subject"]),
        ("issuer", report["issuer"] + (" (self-signed)" if report["self_signed"] else "")),
        ("serial", report["serial"]),
        ("key", f"{report['key_type']} {report['key_bits']} bit"),
        ("valid from", report["not_before"]),
        ("valid until", f"{report['not_after']} ({report['days_left']} days left)"),
        ("valid now", report["valid_now"]),
    ]
    if report["pinned_matches"] is not None:
        pairs.append(("same as --cert", report["pinned_matches"]))
    return "\n".join(_lines(pairs))


def record_report(record: str, public_key_ocmf: str, *, index: int | None = None) -> JsonObject:
    """One stored transaction: its OCMF record's facts and whether its signature verifies."""
    try:
        summary: JsonObject = summarize(record).to_json()
    except ValueError as exc:
        summary = {"unreadable": str(exc)}
    return {
        "index": index,
        **summary,
        "signature_ok": verify_ocmf(record, public_key_ocmf),
        "record": record,
    }


TRANSACTION_COLUMNS = (
    ("index", 6),
    ("PG", 6),
    ("begin", 32),
    ("end", 32),
    ("energy Wh", 10),
    ("identification", 20),
    ("signature", 9),
)


def render_transactions(rows: Sequence[Mapping[str, object]]) -> str:
    """Stored transactions, newest first, as a table."""
    lines = [" ".join(name.ljust(width) for name, width in TRANSACTION_COLUMNS).rstrip()]
    for row in rows:
        cells = (
            _text(row.get("index")),
            _text(row.get("pagination")),
            _text(row.get("begin_time")),
            _text(row.get("end_time")),
            _text(row.get("energy_wh")),
            _text(row.get("identification")),
            "ok" if row["signature_ok"] else "FAILED",
        )
        widths = [width for _, width in TRANSACTION_COLUMNS]
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        lines.append(" ".join(padded).rstrip())
    if not rows:
        lines.append("(no stored transactions)")
    return "\n".join(lines)


def render_record(report: Mapping[str, object]) -> str:
    """One record: its facts, the signature verdict, then the record itself."""
    pairs = [
        ("transaction counter (PG)", report.get("pagination")),
        ("identification", report.get("identification")),
        ("EVSE", report.get("evse_id")),
        ("begin", report.get("begin_time")),
        ("end", report.get("end_time")),
        ("energy Wh", report.get("energy_wh")),
        ("signature", "verifies" if report["signature_ok"] else "DOES NOT VERIFY"),
    ]
    return "\n".join([*_lines(pairs), "", str(report["record"])])
