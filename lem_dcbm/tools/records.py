"""``lem-dcbm records list|export|resend``: the operator's view of the transaction journal.

The journal is read without changing it, so these commands are safe while the module
runs. ``resend`` publishes a kept record on the late-record topic again
(:mod:`lem_dcbm.records.late_record`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from lem_dcbm.cli_common import Subcommands, add_broker_arguments, add_command, broker_from_args
from lem_dcbm.clock import rfc3339
from lem_dcbm.errors import ConfigError, UsageError
from lem_dcbm.journal import JournalEntry, read_journal
from lem_dcbm.json_types import JsonObject
from lem_dcbm.records import export
from lem_dcbm.records.checks import FORMAT
from lem_dcbm.records.late_record import (
    QOS,
    kept_record_from_entry,
    late_record_message,
    late_record_topic,
    verified_now,
)
from lem_dcbm.records.transparenz import transparenz_xml

if TYPE_CHECKING:
    from lem_dcbm.config import BrokerSettings

EXIT_OK = 0
#: The transaction is unknown or has no record; ``resend``: its record's signature fails
#: now; ``export`` as ocmf or transparenz: a record failing its checks was left out.
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
#: The broker did not take the message in time (``resend``).
EXIT_NO_BROKER = 3
#: ``records export --format`` values.
FORMATS = ("json", "csv", "ocmf", "transparenz")
#: Environment variable of EVerest's external MQTT prefix.
EXTERNAL_PREFIX_ENV = "EV_MQTT_EXTERNAL_PREFIX"


@dataclass(frozen=True, slots=True)
class Journal:
    """The journal a command reads: whose it is, where, and what it holds."""

    module_id: str
    directory: Path
    entries: list[JournalEntry]


#: The transactions a command shows, oldest first.
Reports: TypeAlias = list[export.TransactionReport]


def configure(parser: argparse.ArgumentParser) -> None:
    """``lem-dcbm records``: ``list``, ``export`` and ``resend``."""
    sub: Subcommands = parser.add_subparsers(
        dest="records_command", required=True, metavar="ACTION"
    )
    listing = add_command(
        sub,
        "list",
        help="every transaction in the journal, oldest first: times, energy, verdict, record",
        handler=list_command,
    )
    _add_location(listing)
    _add_since(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    exporting = add_command(
        sub,
        "export",
        help="transactions with their records, verified again, as JSON, CSV, OCMF lines or "
        "the Transparenzsoftware's XML",
        handler=export_command,
    )
    _add_location(exporting)
    _add_since(exporting)
    exporting.add_argument(
        "--until",
        metavar="DATE",
        help="only transactions started before this date or RFC 3339 time (default: all)",
    )
    exporting.add_argument(
        "--transaction",
        metavar="ID",
        help="only this transaction; exit 1 when the journal holds no record of it "
        "(default: every transaction)",
    )
    exporting.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="json: a list of objects (the late-record message and the journal's facts); "
        "csv: one row per transaction; ocmf: one record per line; transparenz: one XML file "
        "with each record and the meter's key, for the S.A.F.E. Transparenzsoftware",
    )
    exporting.add_argument(
        "--include-failed",
        action="store_true",
        help="ocmf and transparenz carry no verdict, so a record failing its checks is left "
        "out of them (exit 1); with this option it is written (and named on stderr)",
    )
    exporting.add_argument(
        "--output", type=Path, help="write to this file (default: standard output)"
    )
    resend = add_command(
        sub,
        "resend",
        help="verify a kept record again and publish it on the late-record topic (retained, QoS 1)",
        handler=resend_command,
    )
    resend.add_argument("transaction_id", metavar="ID", help="the transaction's id")
    _add_location(resend)
    add_broker_arguments(resend, prefix=False)
    resend.add_argument(
        "--external-prefix",
        help=f"EVerest's external MQTT prefix (default: ${EXTERNAL_PREFIX_ENV}, else none)",
    )
    resend.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the broker"
    )


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="the module's EVerest config file; its journal_dir and module id are used "
        "(default: none, give --module-id)",
    )
    parser.add_argument(
        "--module-id",
        help="the module's id (default: the only lem-dcbm module in --config)",
    )
    parser.add_argument(
        "--journal-dir",
        type=Path,
        metavar="BASE",
        help="the journal's base directory, like the journal_dir key (default: journal_dir "
        "of --config, else where the module puts it: $LEM_DCBM_STATE_DIR, /var/lib/lem-dcbm, ...)",
    )


def _add_since(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        metavar="DATE",
        help="only transactions started at or after this date or RFC 3339 time, UTC unless "
        "it says otherwise (default: all)",
    )


def list_command(args: argparse.Namespace) -> int:
    """``lem-dcbm records list``."""
    return _with_reports(args, _print_list)


def export_command(args: argparse.Namespace) -> int:
    """``lem-dcbm records export``."""
    return _with_reports(args, _write_export)


def _with_reports(
    args: argparse.Namespace, show: Callable[[argparse.Namespace, Journal, Reports], int]
) -> int:
    try:
        journal = open_journal(args)
        rows = export.reports(journal.entries, _since(args.since))
    except UsageError as err:
        return _usage(args, err)
    return show(args, journal, rows)


def _print_list(args: argparse.Namespace, journal: Journal, rows: Reports) -> int:
    if args.json:
        print(json.dumps([_list_object(report) for report in rows], indent=2))
    else:
        print(_list_table(rows))
    return EXIT_OK


def _write_export(args: argparse.Namespace, journal: Journal, rows: Reports) -> int:
    try:
        rows = _chosen(args, rows)
    except UsageError as err:
        return _usage(args, err)
    status = EXIT_OK
    if args.transaction is not None and not any(report.kept for report in rows):
        print(
            f"lem-dcbm records export: the journal holds no record of transaction "
            f"{args.transaction!r} ({journal.directory})",
            file=sys.stderr,
        )
        status = EXIT_NOT_FOUND
    if args.format == "json":
        objects = [export.export_object(report, journal.module_id) for report in rows]
        text = json.dumps(objects, indent=2) + "\n"
    elif args.format == "csv":
        text = export.export_csv(rows)
    else:
        rows, left_out = _without_failed(rows, args.include_failed)
        status = status or left_out
        if args.format == "transparenz":
            text, skipped = transparenz_xml(rows)
            cannot = "cannot stand in XML unchanged (a control character or a carriage return)"
        else:
            text, skipped = export.export_ocmf(rows)
            cannot = "holds a line break and cannot be one line"
        for transaction_id in skipped:
            print(
                f"lem-dcbm records export: the record of {transaction_id!r} {cannot}; "
                "export it as json or csv",
                file=sys.stderr,
            )
    if args.output is None:
        sys.stdout.write(text)
        return status
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as err:
        return _usage(args, UsageError(f"cannot write {args.output}: {err}"))
    return status


def _chosen(args: argparse.Namespace, rows: Reports) -> Reports:
    """The rows ``--transaction`` and ``--until`` leave (``--since`` chose already)."""
    until = _time_option("--until", args.until)
    return [
        report
        for report in rows
        if (args.transaction is None or report.transaction_id == args.transaction)
        and (until is None or report.moment < until)
    ]


def _without_failed(rows: Reports, include_failed: bool) -> tuple[Reports, int]:
    """For formats without a verdict: the rows to write, and EXIT_NOT_FOUND if one was left out.

    A record failing its checks now is named on stderr; it is written only when asked.
    """
    kept: Reports = []
    left_out = False
    for report in rows:
        verdict = report.verdict
        if verdict is not None and not verdict.ok:
            failed = "; ".join(f"{f.check}: {f.detail}" for f in verdict.failures)
            what = "written as asked" if include_failed else "left out (--include-failed)"
            print(
                f"lem-dcbm records export: the record of {report.transaction_id!r} fails its "
                f"checks now ({failed}); {what}",
                file=sys.stderr,
            )
            if not include_failed:
                left_out = True
                continue
        kept.append(report)
    return kept, EXIT_NOT_FOUND if left_out else EXIT_OK


def resend_command(args: argparse.Namespace) -> int:
    """``lem-dcbm records resend ID``: exit 1 when the id is unknown or has no good record.

    The record is verified now, against the kept key and the start's facts. One whose
    signature fails or that cannot be read is not the meter's record and is not published
    (exit 1); one that fails a content check goes out with that verdict, as the module
    itself publishes it, and the failures are named on standard error.
    """
    try:
        journal = open_journal(args)
        broker = broker_from_args(args)
    except ConfigError as err:
        return _usage(args, UsageError(str(err)))
    except UsageError as err:
        return _usage(args, err)
    entry = next((e for e in journal.entries if e.transaction_id == args.transaction_id), None)
    kept = kept_record_from_entry(entry) if entry else None
    if entry is None or kept is None:
        why = "is not in the journal" if entry is None else "has no record (yet)"
        print(
            f"lem-dcbm records resend: transaction {args.transaction_id!r} {why} "
            f"({journal.directory})",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    prefix = args.external_prefix
    if prefix is None:
        prefix = os.environ.get(EXTERNAL_PREFIX_ENV, "")
    topic = late_record_topic(prefix, journal.module_id, kept.transaction_id)
    checked = verified_now(kept)
    failed = "; ".join(f"{f.check}: {f.detail}" for f in checked.failed_checks)
    if checked.signature_valid is False or FORMAT in [f.check for f in checked.failed_checks]:
        # Not the meter's record any more (edited, damaged, another key): never re-issued.
        print(
            f"lem-dcbm records resend: the kept record of {kept.transaction_id!r} fails its "
            f"checks now ({failed}); not published ({journal.directory})",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    message = late_record_message(
        checked, module_id=journal.module_id, published_at=rfc3339(datetime.now(timezone.utc))
    )
    try:
        publish_retained(broker, topic, json.dumps(message).encode("utf-8"), args.timeout)
    except OSError as err:
        print(f"lem-dcbm records resend: {err}", file=sys.stderr)
        return EXIT_NO_BROKER
    print(f"published the record of {kept.transaction_id!r} on {topic}")
    if failed:
        print(
            f"lem-dcbm records resend: published with its failed checks: {failed}",
            file=sys.stderr,
        )
    return EXIT_OK


def open_journal(args: argparse.Namespace) -> Journal:
    """The journal the location options point at, read without changing it."""
    from lem_dcbm.config import load_everest_config_file
    from lem_dcbm.service import journal_directory

    base = str(args.journal_dir) if args.journal_dir is not None else ""
    if args.config is not None:
        try:
            module_id, config = load_everest_config_file(args.config, args.module_id)
        except ConfigError as err:
            raise UsageError(f"configuration error: {err}") from err
        base = base or config.journal_dir
    elif args.module_id:
        module_id = args.module_id
    else:
        raise UsageError("say whose journal: --config FILE, or --module-id ID")
    directory = journal_directory(base, module_id)
    if not directory.is_dir():
        raise UsageError(f"no journal of module {module_id!r} at {directory}")
    entries, unreadable = read_journal(directory)
    for path, reason in unreadable:
        print(
            f"lem-dcbm records: skipped unreadable journal file {path}: {reason}", file=sys.stderr
        )
    return Journal(module_id, directory, entries)


def publish_retained(broker: BrokerSettings, topic: str, payload: bytes, timeout_s: float) -> None:
    """Publish one retained QoS 1 message and wait for the broker's acknowledgement.

    Raises ``OSError`` saying why when the broker cannot be reached or does not answer.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, transport="unix" if broker.socket_path else "tcp"
    )
    try:
        if broker.socket_path:
            client.connect(broker.socket_path, 0)
        else:
            client.connect(broker.host, broker.port)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot connect to the MQTT broker {broker.describe()}: {err}") from err
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=QOS, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise OSError(f"the MQTT broker {broker.describe()} did not acknowledge in time")
    except RuntimeError as err:  # paho: the message was refused before sending
        raise OSError(f"cannot publish to {broker.describe()}: {err}") from err
    finally:
        client.disconnect()
        client.loop_stop()


def _since(text: str | None) -> datetime | None:
    return _time_option("--since", text)


def _time_option(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return export.parse_time(text)
    except ValueError as err:
        raise UsageError(f"{option} {text!r} is not a date or RFC 3339 time: {err}") from err


def _usage(args: argparse.Namespace, err: Exception) -> int:
    print(f"lem-dcbm records {args.records_command}: {err}", file=sys.stderr)
    return EXIT_USAGE


def _verdict_text(report: export.TransactionReport) -> str:
    verdict = report.verdict
    if verdict is None:
        return "-"
    if verdict.failures:
        return "FAILED " + ",".join(verdict.failed_checks)
    return "OK" if verdict.signature_valid else "OK (signature not checked: no key)"


def _energy_text(report: export.TransactionReport) -> str:
    energy = report.summary.energy_kwh if report.summary else None
    return "-" if energy is None else f"{energy:.3f} kWh"


def _list_table(rows: Reports) -> str:
    header = ("transaction", "started", "stopped", "energy", "record", "late", "verdict")
    table = [header] + [
        (
            report.transaction_id,
            report.started_at or "-",
            report.stopped_at or "-",
            _energy_text(report),
            report.state,
            "late" if report.late else "-",
            _verdict_text(report),
        )
        for report in rows
    ]
    widths = [max(len(row[column]) for row in table) for column in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in table
    )


def _list_object(report: export.TransactionReport) -> JsonObject:
    verdict = report.verdict
    return {
        "transaction_id": report.transaction_id,
        "state": report.state,
        "started_at": report.started_at,
        "stopped_at": report.stopped_at,
        "energy_kwh": report.summary.energy_kwh if report.summary else None,
        "energy_wh": report.summary.energy_wh if report.summary else None,
        "record": report.kept is not None,
        "late": report.late,
        "signature_valid": verdict.signature_valid if verdict else None,
        "failed_checks": [failure.to_json() for failure in verdict.failures] if verdict else [],
    }
