"""The journal's transactions as an operator's report: state, energy, a fresh verdict, exports.

Every record is verified again when it is reported, with the key and the facts of the
start that the journal stored along with it, so an export says what holds now, not only
what the module found when it fetched the record. Pure: the caller reads the journal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from lem_dcbm.journal import JournalEntry
from lem_dcbm.json_types import JsonMapping, JsonObject, JsonValue
from lem_dcbm.records.checks import RecordVerdict
from lem_dcbm.records.late_record import (
    KeptRecord,
    kept_record_from_entry,
    late_record_message,
    verified_now,
)
from lem_dcbm.records.summary import RecordSummary, summarize

#: The record is in the journal.
KEPT = "kept"
#: The meter stopped the transaction; its record is still to be fetched.
AWAITED = "awaited"
#: Started and not (known to be) stopped.
RUNNING = "running"
#: The meter never confirmed the start.
NOT_STARTED = "not started"

#: Columns of the CSV export, in order.
CSV_COLUMNS = (
    "transaction_id",
    "state",
    "started_at",
    "stopped_at",
    "meter_id",
    "pagination",
    "evse_id",
    "identification",
    "begin_time",
    "end_time",
    "begin_import_kwh",
    "end_import_kwh",
    "energy_kwh",
    "energy_wh",
    "signature_valid",
    "failed_checks",
    "late",
    "late_published_at",
    "ocmf",
)


@dataclass(frozen=True, slots=True)
class TransactionReport:
    """One journal transaction as the tools show it."""

    entry: JournalEntry
    #: One of KEPT, AWAITED, RUNNING, NOT_STARTED.
    state: str
    #: The record with its stored facts; None without a record.
    kept: KeptRecord | None
    #: The verdict of verifying the record now; None without a record.
    verdict: RecordVerdict | None
    #: What the record says; None without a record or when it cannot be read.
    summary: RecordSummary | None

    @property
    def transaction_id(self) -> str:
        """The transaction's id."""
        return self.entry.transaction_id

    @property
    def started_at(self) -> str | None:
        """When the meter confirmed the start (RFC 3339), if the journal knows it."""
        return _text(self.entry.data.get("started_at"))

    @property
    def stopped_at(self) -> str | None:
        """When the meter confirmed the stop (RFC 3339), if the journal knows it."""
        return _text(self.entry.data.get("stopped_at"))

    @property
    def late(self) -> bool:
        """The record reached EVerest only by the late-record road."""
        return self.entry.data.get("late") is True

    @property
    def moment(self) -> datetime:
        """When the transaction happened, for ordering and ``--since``: start, else last write."""
        for text in (self.started_at, self.stopped_at, self.entry.updated_at):
            if text:
                try:
                    return parse_time(text)
                except ValueError:
                    continue
        return datetime.min.replace(tzinfo=timezone.utc)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time or a date (midnight UTC); a time without offset counts as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def reports(
    entries: Iterable[JournalEntry], since: datetime | None = None
) -> list[TransactionReport]:
    """Every transaction, oldest first, from ``since`` on; records verified now.

    A record's pagination must follow the previous record of the same meter in this list.
    """
    ordered = sorted((_report(entry) for entry in entries), key=lambda report: report.moment)
    previous: dict[str, int] = {}  # meter id -> pagination of its latest record so far
    checked = []
    for unchecked in ordered:
        report = unchecked
        if unchecked.kept is not None:
            meter = unchecked.kept.meter_id
            report = _verified(unchecked, previous.get(meter))
            number = report.summary.pagination if report.summary else None
            if number is not None:
                previous[meter] = number
        checked.append(report)
    return [report for report in checked if since is None or report.moment >= since]


def _report(entry: JournalEntry) -> TransactionReport:
    if entry.has_record:
        state = KEPT
    elif entry.awaiting_record:
        state = AWAITED
    elif entry.open:
        state = RUNNING
    else:
        state = NOT_STARTED
    kept = kept_record_from_entry(entry)
    summary = None
    if kept is not None:
        try:
            summary = summarize(kept.ocmf)
        except ValueError:
            summary = None
    return TransactionReport(entry, state, kept, None, summary)


def _verified(report: TransactionReport, after_pagination: int | None) -> TransactionReport:
    assert report.kept is not None
    # The previous record in this list is the pagination to follow, whatever was stored.
    expected = replace(report.kept.expected, after_pagination=after_pagination)
    kept = verified_now(replace(report.kept, expected=expected))
    verdict = RecordVerdict(kept.signature_valid, kept.failed_checks)
    return TransactionReport(report.entry, report.state, kept, verdict, report.summary)


def export_object(report: TransactionReport, module_id: str) -> JsonObject:
    """One transaction for the JSON export: the late-record message's fields and the journal's.

    Without a record, ``signed_meter_value``, ``verification`` and ``summary`` are null.
    ``published_at`` is when the record went out on the late-record topic, if it did.
    """
    data = report.entry.data
    published_at = _text(data.get("late_published_at"))
    if report.kept is not None and report.verdict is not None:
        kept = report.kept
        message = late_record_message(kept, module_id=module_id, published_at=published_at or "")
        message["published_at"] = published_at
    else:
        message = {
            "version": 1,
            "module_id": module_id,
            "transaction_id": report.transaction_id,
            "meter_id": _text(data.get("meter_id")) or "",
            "signed_meter_value": None,
            "verification": None,
            "started_at": report.started_at,
            "stopped_at": report.stopped_at,
            "fetched_at": None,
            "published_at": published_at,
        }
    return {
        **message,
        "state": report.state,
        "late": report.late,
        "steps": [str(step) for step in report.entry.steps],  # plain text, not the enum
        "updated_at": report.entry.updated_at,
        "start": {key: data.get(key) for key in _START_FACTS},
        "transaction_status": data.get("transaction_status"),
        "summary": report.summary.to_json() if report.summary else None,
    }


_START_FACTS = ("evse_id", "client_id", "tariff_id", "tariff_text", "cable_id", "pagination")


def export_csv(rows: Sequence[TransactionReport]) -> str:
    """One CSV row per transaction, with a header (:data:`CSV_COLUMNS`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for report in rows:
        writer.writerow(_csv_row(report))
    return out.getvalue()


def _csv_row(report: TransactionReport) -> JsonMapping:
    summary = report.summary
    verdict = report.verdict
    return {
        "transaction_id": report.transaction_id,
        "state": report.state,
        "started_at": report.started_at or "",
        "stopped_at": report.stopped_at or "",
        "meter_id": report.kept.meter_id
        if report.kept
        else _text(report.entry.data.get("meter_id")) or "",
        "pagination": _blank(summary.pagination if summary else None),
        "evse_id": _blank(summary.evse_id if summary else None),
        "identification": _blank(summary.identification if summary else None),
        "begin_time": _blank(summary.begin_time if summary else None),
        "end_time": _blank(summary.end_time if summary else None),
        "begin_import_kwh": _blank(summary.begin_import_kwh if summary else None),
        "end_import_kwh": _blank(summary.end_import_kwh if summary else None),
        "energy_kwh": _blank(summary.energy_kwh if summary else None),
        "energy_wh": _blank(summary.energy_wh if summary else None),
        "signature_valid": _blank(verdict.signature_valid if verdict else None),
        "failed_checks": ";".join(verdict.failed_checks) if verdict else "",
        "late": "true" if report.late else "false",
        "late_published_at": _text(report.entry.data.get("late_published_at")) or "",
        "ocmf": report.kept.ocmf if report.kept else "",
    }


def export_ocmf(rows: Sequence[TransactionReport]) -> tuple[str, list[str]]:
    """One record per line, and the ids of records left out because they hold a line break."""
    lines = []
    skipped = []
    for report in rows:
        if report.kept is None:
            continue
        # A line break inside a record would split it; the record itself must not change.
        if "\n" in report.kept.ocmf or "\r" in report.kept.ocmf:
            skipped.append(report.transaction_id)
            continue
        lines.append(report.kept.ocmf + "\n")
    return "".join(lines), skipped


def _blank(value: JsonValue) -> JsonValue:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
