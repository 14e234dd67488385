"""``lem-dcbm ocmf verify``: check one signed record's signature and content, and show it.

Exit codes (``EXIT_CODES``): 0 when every check passed, the signature's included; 1 when
one failed; 2 for bad usage or a record that cannot be read; 3 when nothing failed but
the signature was not checked, for want of a key: a record nobody verified is never
reported as OK. The key comes from ``--key``, from the meter itself (``--from-meter``,
``GET /v1/status``), or from the JSON the record came in.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lem_dcbm.cli_common import Subcommands, add_command
from lem_dcbm.errors import UsageError
from lem_dcbm.json_types import JsonObject
from lem_dcbm.ocmf import PREFIX, load_public_key
from lem_dcbm.records.checks import RecordExpectation, RecordVerdict, check_record, checks_run
from lem_dcbm.records.summary import RecordSummary, summarize

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNCHECKED = 3
#: What each exit code means, for ``--help`` (the docs say the same).
EXIT_CODES = (
    "exit codes: 0 every check passed, the signature included; 1 a check failed; "
    "2 bad usage, an unreadable record or key, or a meter that cannot be asked; "
    "3 no check failed, but the signature was not checked (no key: give --key or "
    "--from-meter)"
)


@dataclass(frozen=True, slots=True)
class RecordInput:
    """A record as given, and the public key found along with it (in a JSON wrapper)."""

    record: str
    public_key: str | None = None


def configure(parser: argparse.ArgumentParser) -> None:
    """``lem-dcbm ocmf``: its one subcommand, ``verify``."""
    sub: Subcommands = parser.add_subparsers(dest="ocmf_command", required=True, metavar="ACTION")
    verify = add_command(
        sub,
        "verify",
        help="check a signed OCMF record (signature and content) and show what it says",
        handler=verify_command,
    )
    verify.epilog = EXIT_CODES
    verify.add_argument(
        "record",
        metavar="RECORD|FILE|-",
        help="the record (OCMF|...), a file holding it, or - for standard input; the text may "
        "also be JSON with the record in signed_meter_data (a SignedMeterValue, a stop "
        "response or a late-record message), whose public_key is then used",
    )
    key = verify.add_mutually_exclusive_group()
    key.add_argument(
        "--key",
        help="the meter's publicKeyOcmf (hex or base64 DER, or PEM) "
        "(default: the key in the JSON input; without one the signature is not checked)",
    )
    key.add_argument(
        "--from-meter",
        metavar="URL",
        help="read publicKeyOcmf (and the meter id) from the meter's GET /v1/status at "
        "http(s)://host[:port] (default: not asked)",
    )
    verify.add_argument(
        "--cert",
        type=Path,
        metavar="PEM",
        help="the meter's own TLS certificate, required for an https --from-meter URL "
        "(default: none)",
    )
    verify.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the meter's answer"
    )
    verify.add_argument(
        "--meter-id",
        help="MS and GS must be this meter id (default: the meter's, with --from-meter)",
    )
    verify.add_argument(
        "--client-id",
        metavar="ID",
        help="ID must be this, whole: lem-dcbm writes '<identification data>,<transaction id>' "
        "(cut to 37 bytes), e.g. 'RFID-04A2,tx-1' (default: not checked)",
    )
    verify.add_argument("--evse-id", help="CI must be this EVSE id (default: not checked)")
    verify.add_argument(
        "--tariff-text", help='TT must be this tariff text, "" for none (default: not checked)'
    )
    verify.add_argument(
        "--cable-id",
        type=int,
        help="UC.UI of the begin reading must be this (default: not checked)",
    )
    verify.add_argument(
        "--pagination",
        type=int,
        help="PG must be T followed by this number (default: not checked)",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")


def verify_command(args: argparse.Namespace) -> int:
    """Run ``lem-dcbm ocmf verify``; the exit code says whether the record passed."""
    try:
        given = read_record_input(args.record)
        key, meter_id = _key_and_meter(args, given)
    except UsageError as err:
        print(f"lem-dcbm ocmf verify: {err}", file=sys.stderr)
        return EXIT_USAGE
    expected = RecordExpectation(
        meter_id=args.meter_id if args.meter_id is not None else meter_id,
        client_id=args.client_id,
        evse_id=args.evse_id,
        tariff_text=args.tariff_text,
        cable_id=args.cable_id,
        pagination=args.pagination,
    )
    verdict = check_record(given.record, expected, key)
    readable = "format" not in verdict.failed_checks
    summary = summarize(given.record) if readable else None
    checks = checks_run(expected, with_key=key is not None)
    if args.json:
        print(json.dumps(_as_json(given.record, summary, verdict, checks, key), indent=2))
    else:
        print(_as_text(summary, verdict, checks, key))
    if not readable:
        detail = verdict.failures[0].detail
        print(f"lem-dcbm ocmf verify: not a readable OCMF record: {detail}", file=sys.stderr)
        return EXIT_USAGE
    return _exit_code(verdict, key)


def result_word(verdict: RecordVerdict, key: str | None) -> str:
    """``ok``, ``failed``, or ``unchecked`` (nothing failed, but no key to check the signature)."""
    if not verdict.ok:
        return "failed"
    return "ok" if key is not None else "unchecked"


def _exit_code(verdict: RecordVerdict, key: str | None) -> int:
    return {"ok": EXIT_OK, "failed": EXIT_FAILED, "unchecked": EXIT_UNCHECKED}[
        result_word(verdict, key)
    ]


def read_record_input(source: str) -> RecordInput:
    """The record given as text, a file or ``-``; ``UsageError`` when there is none."""
    if source == "-":
        text = sys.stdin.read()
    elif source.lstrip().startswith(PREFIX):
        text = source
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{source!r} is neither an OCMF record nor a readable file: {exc}"
            ) from exc
    # Blanks around the record are not part of it (the signature covers the payload only).
    text = text.strip()
    if text.startswith(("{", '"')):
        return _from_json(text)
    return RecordInput(text)


def _from_json(text: str) -> RecordInput:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the input looks like JSON but is not: {exc}") from exc
    if isinstance(data, str):
        return RecordInput(data)
    wrapper = data.get("signed_meter_value", data) if isinstance(data, dict) else None
    record = wrapper.get("signed_meter_data") if isinstance(wrapper, dict) else None
    if not isinstance(record, str):
        raise UsageError("the JSON input has no signed_meter_data (or signed_meter_value) string")
    key = wrapper.get("public_key") if isinstance(wrapper, dict) else None
    return RecordInput(record, key if isinstance(key, str) and key else None)


def _key_and_meter(args: argparse.Namespace, given: RecordInput) -> tuple[str | None, str | None]:
    """The key to verify with and, from the meter, its id."""
    if args.cert is not None and args.from_meter is None:
        raise UsageError("--cert goes with an https --from-meter URL")
    if args.from_meter is not None:
        return _ask_meter(args.from_meter, args.cert, args.timeout)
    key = args.key if args.key is not None else given.public_key
    if key is not None:
        try:
            load_public_key(key)
        except ValueError as exc:
            raise UsageError(f"the public key cannot be read: {exc}") from exc
    return key, None


def _ask_meter(url: str, cert: Path | None, timeout_s: float) -> tuple[str, str]:
    """``publicKeyOcmf`` and ``meterId`` from ``GET /v1/status`` at ``url``."""
    from lem_dcbm.errors import LemDcbmError
    from lem_dcbm.meter.client import MeterClient

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--from-meter {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise UsageError(f"--from-meter {url!r} is not http(s)://host[:port]")
    pem = ""
    if parts.scheme == "https":
        if cert is None:
            raise UsageError("an https meter needs its certificate: --cert PEM")
        try:
            pem = cert.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --cert {cert}: {exc}") from exc
    try:
        client = MeterClient.connect(
            parts.hostname,
            port or (443 if parts.scheme == "https" else 80),
            tls_certificate_pem=pem,
            timeout_s=timeout_s,
        )
        try:
            status = client.status()
        finally:
            client.close()
    except LemDcbmError as exc:
        raise UsageError(f"cannot read the key from the meter at {url}: {exc}") from exc
    return status.public_key_ocmf, status.meter_id


def _as_json(
    record: str,
    summary: RecordSummary | None,
    verdict: RecordVerdict,
    checks: tuple[str, ...],
    key: str | None,
) -> JsonObject:
    return {
        "ok": result_word(verdict, key) == "ok",
        "result": result_word(verdict, key),
        "signature_checked": key is not None,
        "record": record,
        "public_key": key,
        "summary": summary.to_json() if summary else None,
        "checks_run": list(checks),
        **verdict.to_json(),
    }


def _as_text(
    summary: RecordSummary | None,
    verdict: RecordVerdict,
    checks: tuple[str, ...],
    key: str | None,
) -> str:
    lines = []
    if summary is not None:
        lines += summary_lines(summary)
    if key is None:
        lines.append(f"{'signature':<16} NOT CHECKED (no key: give --key or --from-meter)")
    elif verdict.signature_valid:
        lines.append(f"{'signature':<16} valid")
    failed = verdict.failed_checks
    passed = [check for check in checks if check not in failed]
    for failure in verdict.failures:
        lines.append(f"FAILED {failure.check}: {failure.detail}")
    if passed and summary is not None:
        lines.append(f"passed: {', '.join(passed)}")
    lines.append(
        {
            "ok": "result: OK",
            "failed": "result: FAILED",
            "unchecked": "result: UNCHECKED (no check failed, but the signature was not checked)",
        }[result_word(verdict, key)]
    )
    return "\n".join(lines)


def summary_lines(summary: RecordSummary) -> list[str]:
    """A record's summary as aligned ``label  value`` lines for a terminal."""
    identification = f"{summary.identification_type or '?'} {summary.identification or ''}"
    rows = [
        ("meter", summary.meter_serial or "?"),
        ("transaction", "?" if summary.pagination is None else f"T{summary.pagination}"),
        ("identification", identification.rstrip()),
        ("EVSE", summary.evse_id or "-"),
        ("tariff text", summary.tariff_text or "-"),
        ("begin", _moment(summary.begin_time, summary.begin_import_kwh, summary.begin_export_kwh)),
        ("end", _moment(summary.end_time, summary.end_import_kwh, summary.end_export_kwh)),
        (
            "energy",
            "?"
            if summary.energy_wh is None
            else f"{summary.energy_kwh:.3f} kWh ({summary.energy_wh} Wh)",
        ),
    ]
    return [f"{label:<16} {value}" for label, value in rows]


def _moment(time: str | None, import_kwh: float | None, export_kwh: float | None) -> str:
    return f"{time or '?'}  import {_kwh(import_kwh)}  export {_kwh(export_kwh)}"


def _kwh(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f} kWh"
