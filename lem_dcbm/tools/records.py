"""``lem-dcbm ocmf verify`` and ``lem-dcbm records``: the operator's view of signed records.

``ocmf verify`` checks one record (signature and content) and shows what it says.
``records list|export|resend`` read the module's journal, the operator's copy of every
record (the meter's ring overwrites after about 20 400): list them with their verdicts,
export them for a backend or the Transparenzsoftware, or publish one again on the
late-record topic. They only read the journal; the running module owns it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lem_dcbm.errors import ConfigError, LemDcbmError
from lem_dcbm.journal import JournalEntry, read_entries
from lem_dcbm.records.checks import RecordExpectation, RecordVerdict, check_record
from lem_dcbm.records.late_record import (
    kept_record_from_entry,
    late_record_message,
    late_record_topic,
)
from lem_dcbm.records.summary import summarize

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"lem-dcbm: {message}", file=sys.stderr)
    return code


# -- ocmf verify ------------------------------------------------------------------------


def add_ocmf_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ocmf verify``."""
    ocmf = sub.add_parser("ocmf", help="check a signed OCMF record")
    verbs = ocmf.add_subparsers(dest="verb", required=True)
    verify = verbs.add_parser(
        "verify",
        help="check signature and content of a record; exit 1 when a check fails",
    )
    verify.add_argument("record", help="the record itself, a file holding it, or - for stdin")
    source = verify.add_mutually_exclusive_group()
    source.add_argument("--key", help="publicKeyOcmf (hex or base64 DER) to verify with")
    source.add_argument(
        "--from-meter",
        metavar="URL",
        help="read publicKeyOcmf from the meter at http(s)://HOST[:PORT]",
    )
    verify.add_argument("--cert", type=Path, help="the meter's certificate (PEM) for https")
    verify.add_argument("--meter-id", help="MS and GS must equal this meter id")
    verify.add_argument("--evse-id", help="CI must equal this EVSE id")
    verify.add_argument("--client-id", help="ID must equal this clientId")
    verify.add_argument("--cable-id", type=int, help="UC.UI must equal this cable id")
    verify.add_argument("--pagination", type=int, help="PG must be T<this number>")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")


def _read_record(argument: str) -> str:
    if argument == "-":
        return sys.stdin.read().strip()
    if argument.startswith("OCMF|"):
        return argument
    try:
        return Path(argument).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError("record", f"not a record and not a readable file: {err}") from err


def _key_from_meter(url: str, cert: Path | None) -> str:
    from urllib.parse import urlsplit

    from lem_dcbm.meter.client import MeterClient

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--from-meter", f"expected http(s)://HOST[:PORT], got {url!r}")
    if (parts.scheme == "https") != (cert is not None):
        raise ConfigError("--cert", "give the meter's certificate exactly when the URL is https")
    pem = cert.read_text(encoding="utf-8") if cert is not None else ""
    client = MeterClient.connect(
        parts.hostname, parts.port or 80, tls_certificate_pem=pem, timeout_s=5.0
    )
    try:
        return client.status().public_key_ocmf
    finally:
        client.close()


def _verdict_json(verdict: RecordVerdict) -> dict[str, Any]:
    return {
        "ok": verdict.ok,
        "signature_valid": verdict.signature_valid,
        "failed_checks": [asdict(failure) for failure in verdict.failures],
    }


def verify_command(args: argparse.Namespace) -> int:
    """``lem-dcbm ocmf verify``."""
    try:
        record = _read_record(args.record)
        key = args.key or (_key_from_meter(args.from_meter, args.cert) if args.from_meter else "")
    except (LemDcbmError, OSError) as err:
        return _fail(str(err))
    expected = RecordExpectation(
        meter_id=args.meter_id,
        client_id=args.client_id,
        evse_id=args.evse_id,
        cable_id=args.cable_id,
        pagination=args.pagination,
    )
    verdict = check_record(record, expected, key or None)
    try:
        summary = summarize(record)
    except ValueError:
        summary = None
    if args.json:
        document = _verdict_json(verdict)
        if summary is not None:
            document["summary"] = {
                **asdict(summary),
                "energy_kwh": summary.energy_kwh,
                "energy_wh": summary.energy_wh,
            }
        print(json.dumps(document, indent=2))
    else:
        for line in summary.lines() if summary is not None else []:
            print(line)
        signature = {True: "valid", False: "INVALID", None: "not checked (no key)"}
        print(f"{'signature':>15}: {signature[verdict.signature_valid]}")
        for failure in verdict.failures:
            print(f"{'FAILED':>15}: {failure.check}: {failure.detail}")
        print(f"{'result':>15}: {'all checks passed' if verdict.ok else 'checks failed'}")
    return EXIT_OK if verdict.ok else EXIT_FAILED


# -- records ----------------------------------------------------------------------------


def add_records_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``records list|export|resend``."""
    records = sub.add_parser("records", help="list, export or resend the journal's records")
    verbs = records.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="every transaction in the journal, oldest first")
    export = verbs.add_parser(
        "export", help="every record, for a backend or the Transparenzsoftware"
    )
    resend = verbs.add_parser("resend", help="publish a kept record on its late-record topic")
    for parser in (listing, export, resend):
        where = parser.add_argument_group("journal (one of)")
        where.add_argument("--config", type=Path, help="the module's EVerest config file")
        where.add_argument(
            "--journal-dir", help="the journal base directory (journal_dir of the config)"
        )
        parser.add_argument("--module-id", help="the module's id (default: the config's only one)")
    for parser in (listing, export):
        parser.add_argument(
            "--since", help="only transactions written on or after this date (YYYY-MM-DD)"
        )
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    export.add_argument(
        "--format",
        choices=("json", "csv", "ocmf"),
        default="json",
        help="json (default), csv, or ocmf (one record per line)",
    )
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    resend.add_argument("transaction_id", help="the transaction whose record to publish")
    resend.add_argument("--broker-host", help="MQTT broker host (env EV_MQTT_BROKER_HOST)")
    resend.add_argument(
        "--broker-port", type=int, help="MQTT broker port (env EV_MQTT_BROKER_PORT)"
    )
    resend.add_argument(
        "--broker-socket", help="MQTT broker unix socket (env EV_MQTT_BROKER_SOCKET_PATH)"
    )
    resend.add_argument(
        "--external-prefix", help="EVerest's external MQTT prefix (env EV_MQTT_EXTERNAL_PREFIX)"
    )


def _journal_location(args: argparse.Namespace) -> tuple[Path, str]:
    from lem_dcbm.service import journal_directory

    if args.config is not None:
        from lem_dcbm.config import load_everest_config_file

        module_id, config = load_everest_config_file(args.config, args.module_id)
        return journal_directory(config.journal_dir, module_id), module_id
    if not args.module_id:
        raise ConfigError("--module-id", "give --config, or --module-id (with --journal-dir)")
    return journal_directory(args.journal_dir or "", args.module_id), args.module_id


def _since(text: str | None) -> str:
    if text is None:
        return ""
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError as err:
        raise ConfigError("--since", f"not a date (YYYY-MM-DD): {text!r}") from err


def _rows(entries: list[JournalEntry], since: str) -> list[dict[str, Any]]:
    rows = []
    for entry in entries:
        if since and entry.updated_at < since:
            continue
        data = entry.data
        row: dict[str, Any] = {
            "transaction_id": str(data.get("session_of") or entry.transaction_id),
            "journal_id": entry.transaction_id,
            "meter_id": data.get("meter_id"),
            "started_at": data.get("started_at"),
            "stopped_at": data.get("stopped_at"),
            "state": _state(entry),
            "late": bool(data.get("late", False)),
            "late_published_at": data.get("late_published_at"),
            "energy_wh": None,
            "signature_valid": None,
            "failed_checks": [],
            "ocmf": entry.ocmf,
        }
        kept = kept_record_from_entry(entry)
        if kept is not None:
            # Verified again now, with the key kept beside it.
            verdict = check_record(kept.ocmf, RecordExpectation(), kept.public_key_ocmf or None)
            stored = [asdict(f) for f in kept.failed_checks]
            row["signature_valid"] = verdict.signature_valid
            row["failed_checks"] = stored or [asdict(f) for f in verdict.failures]
            with contextlib.suppress(ValueError):
                row["energy_wh"] = summarize(kept.ocmf).energy_wh
        rows.append(row)
    return rows


def _state(entry: JournalEntry) -> str:
    if entry.has_record:
        return "record"
    if entry.stopped:
        return "awaiting record"
    if entry.started:
        return "running"
    return "start requested"


def records_command(args: argparse.Namespace) -> int:
    """``lem-dcbm records ...``."""
    try:
        directory, module_id = _journal_location(args)
        since = _since(getattr(args, "since", None))
    except ConfigError as err:
        return _fail(str(err))
    if not directory.is_dir():
        return _fail(f"no journal at {directory}", EXIT_FAILED)
    entries, unreadable = read_entries(directory)
    for problem in unreadable:
        print(f"lem-dcbm: skipped an unreadable journal file: {problem}", file=sys.stderr)
    if args.verb == "resend":
        return _resend(args, entries, module_id)
    rows = _rows(entries, since)
    if args.verb == "list":
        _print_list(rows, as_json=args.json)
        return EXIT_OK
    text = _export(rows, args.format, module_id)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _print_list(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([{k: v for k, v in r.items() if k != "ocmf"} for r in rows], indent=2))
        return
    print(f"{'transaction':<38} {'stopped (UTC)':<21} {'state':<16} {'Wh':>10} verdict")
    for row in rows:
        checks = ",".join(f["check"] for f in row["failed_checks"])
        verdict = {True: "valid", False: "INVALID", None: "-"}[row["signature_valid"]]
        if checks:
            verdict += f" failed: {checks}"
        if row["late"]:
            verdict += " (late road)"
        energy = "-" if row["energy_wh"] is None else f"{row['energy_wh']:.0f}"
        print(
            f"{row['transaction_id']:<38} {str(row['stopped_at'] or '-'):<21} "
            f"{row['state']:<16} {energy:>10} {verdict}"
        )


def _export(rows: list[dict[str, Any]], fmt: str, module_id: str) -> str:
    with_record = [row for row in rows if row["ocmf"]]
    if fmt == "ocmf":
        return "".join(f"{row['ocmf']}\n" for row in with_record)
    if fmt == "json":
        return json.dumps([{**row, "module_id": module_id} for row in with_record], indent=2) + "\n"
    out = io.StringIO()
    columns = [
        "transaction_id",
        "meter_id",
        "started_at",
        "stopped_at",
        "energy_wh",
        "signature_valid",
        "failed_checks",
        "late",
        "ocmf",
    ]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in with_record:
        checks = ";".join(f["check"] for f in row["failed_checks"])
        writer.writerow({**row, "failed_checks": checks})
    return out.getvalue()


def _resend(args: argparse.Namespace, entries: list[JournalEntry], module_id: str) -> int:
    import os

    from lem_dcbm.clock import SystemClock, rfc3339
    from lem_dcbm.config import broker_settings
    from lem_dcbm.everest.bus import BrokerUnavailable, MqttBus

    matching = [
        e
        for e in entries
        if args.transaction_id in (e.transaction_id, e.data.get("session_of")) and e.has_record
    ]
    if not matching:
        return _fail(f"the journal holds no record of {args.transaction_id}", EXIT_FAILED)
    kept = kept_record_from_entry(matching[-1])
    assert kept is not None  # has_record
    try:
        broker = broker_settings(
            host=args.broker_host, port=args.broker_port, socket_path=args.broker_socket
        )
    except ConfigError as err:
        return _fail(str(err))
    external = (
        args.external_prefix
        if args.external_prefix is not None
        else os.environ.get("EV_MQTT_EXTERNAL_PREFIX", "")
    )
    topic = late_record_topic(external, module_id, kept.transaction_id)
    message = late_record_message(
        kept, module_id=module_id, published_at=rfc3339(SystemClock().utc_now())
    )
    bus = MqttBus(broker, f"lem_dcbm_records-{os.getpid()}")
    try:
        bus.connect(5.0)
    except BrokerUnavailable as err:
        return _fail(str(err), EXIT_FAILED)
    try:
        sent = bus.publish(topic, json.dumps(message).encode(), qos=1, retain=True)
    finally:
        bus.close(5.0)
    if not sent:
        return _fail(f"could not publish on {topic}", EXIT_FAILED)
    print(f"published the record of {kept.transaction_id} on {topic} (retained)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Parser for ``ocmf`` and ``records``."""
    parser = argparse.ArgumentParser(prog="lem-dcbm")
    sub = parser.add_subparsers(dest="command", required=True)
    add_ocmf_parser(sub)
    add_records_parser(sub)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``ocmf ...`` or ``records ...``."""
    args = build_parser().parse_args(list(argv))
    if args.command == "ocmf":
        return verify_command(args)
    return records_command(args)
