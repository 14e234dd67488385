"""``lem-dcbm meter ...``: commissioning a LEM DCBM straight over its REST API.

Status and error bits, live values, the TLS certificate and switch, the clock and the
stored transactions, without the module or a broker: what people did with curl. Every
action talks to one meter through the module's own client (``--host``, ``--port``, and
``--cert`` to pin the meter's certificate and speak HTTPS, as ``meter_tls_certificate``
does for the module), prints a readable table, or the same facts as JSON with ``--json``.

Exit codes: 0 done, 1 the meter failed or refused (one line on stderr names the URL),
2 bad options (one line names the flag).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lem_dcbm.atomic_file import write_atomic
from lem_dcbm.cli_common import Subcommands, add_command
from lem_dcbm.clock import SystemClock
from lem_dcbm.config import ModuleConfig, is_host
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.errors import (
    ConfigError,
    ControllerError,
    LemDcbmError,
    MeterConnectionError,
    MeterStatusError,
    MeterTlsError,
    UsageError,
)
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.meter.probe import ProbeTarget, presented_certificate
from lem_dcbm.meter.tls import certificate_der, normalize_pem, sha256_fingerprint
from lem_dcbm.tools import meter_report

EXIT_OK = 0
EXIT_METER = 1
EXIT_USAGE = 2
DEFAULT_PORT = 80
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_TRANSACTIONS = 10
#: What the module writes unless configured otherwise (``meter_timezone``, ``meter_dst``).
_MODULE_DEFAULTS = {item.name: item.default for item in fields(ModuleConfig)}

Action = Callable[[argparse.Namespace], int]


def configure(parser: argparse.ArgumentParser) -> None:
    """``lem-dcbm meter``: status, live, cert, tls, sync-time, transactions, ocmf, stop-foreign."""
    sub: Subcommands = parser.add_subparsers(dest="meter_command", required=True, metavar="ACTION")
    _action(
        sub,
        "status",
        "status and error bits decoded, firmware, API generation, clock skew, "
        "time sync, stored transactions, logbook",
        status_command,
    )
    live = _action(sub, "live", "live values as a table, one row per reading", live_command)
    live.add_argument("--once", action="store_true", help="one row, then exit")
    live.add_argument(
        "--count", type=int, default=0, metavar="N", help="stop after N rows (0: until Ctrl-C)"
    )
    live.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between readings"
    )
    cert = _action(
        sub,
        "cert",
        "fetch the meter's TLS certificate, repair its PEM, show fingerprint, key and validity",
        cert_command,
    )
    cert.add_argument(
        "--out", type=Path, metavar="FILE", help="write the repaired PEM here (default: print only)"
    )
    cert.add_argument(
        "--from-handshake",
        action="store_true",
        help="read the certificate the meter presents over TLS, for a meter whose TLS is on "
        "and whose certificate is unknown (check its fingerprint against a trusted record)",
    )
    tls = _action(
        sub,
        "tls",
        "switch the meter's TLS on or off, then check that it answers the new way "
        "(with TLS: over the pinned certificate)",
        tls_command,
    )
    tls.add_argument(
        "state",
        choices=("on", "off"),
        help="on: switch over HTTP; --cert is the certificate to expect afterwards (default: "
        "the one the meter serves now). off: switch over HTTPS pinned to --cert (required)",
    )
    sync = _action(
        sub,
        "sync-time",
        "set the meter's clock to this machine's (UTC), with timezone and DST rules, "
        "as the module does",
        sync_time_command,
    )
    sync.add_argument(
        "--timezone",
        default=_MODULE_DEFAULTS["meter_timezone"],
        help="the meter's UTC offset, +HH:MM (the module's meter_timezone)",
    )
    sync.add_argument(
        "--dst",
        default=_MODULE_DEFAULTS["meter_dst"],
        help="daylight saving rules as JSON (the module's meter_dst; default: its default, off)",
    )
    transactions = _action(
        sub,
        "transactions",
        "the last stored transactions, newest first, from their signed OCMF records",
        transactions_command,
    )
    transactions.add_argument(
        "count",
        metavar="N",
        nargs="?",
        type=int,
        default=DEFAULT_TRANSACTIONS,
        help=f"how many (default: {DEFAULT_TRANSACTIONS})",
    )
    ocmf = _action(
        sub,
        "ocmf",
        "the signed OCMF record of a transaction, checked against the meter's key",
        ocmf_command,
    )
    ocmf.add_argument("transaction_id", metavar="ID", help="the transaction's id")
    foreign = _action(
        sub,
        "stop-foreign",
        "stop the transaction the meter runs, named by its id, when no module owns it "
        "(a module refuses starts over it); prints its signed record for the billing backend",
        stop_foreign_command,
    )
    foreign.add_argument(
        "--transaction-id",
        required=True,
        metavar="ID",
        help="the id of the running transaction to stop, as the module's refusal names it; "
        "nothing is stopped when the meter runs another one",
    )


def _action(sub: Subcommands, name: str, help: str, action: Action) -> argparse.ArgumentParser:
    parser = add_command(sub, name, help=help, handler=lambda args: _run(action, args))
    group = parser.add_argument_group("meter")
    group.add_argument(
        "--host", required=True, help="the meter's IP address or host name (required)"
    )
    group.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="the meter's REST port (the same with TLS on)",
    )
    group.add_argument(
        "--cert",
        type=Path,
        metavar="PEM",
        help="the meter's certificate (PEM) to pin; given, the meter is asked over HTTPS "
        "(default: none, plain HTTP)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for an answer",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _run(action: Action, args: argparse.Namespace) -> int:
    """Run ``action``; meter failures and bad options become one line and an exit code."""
    # The transport's "gave up after 2 attempts" would repeat the error printed below.
    retry_log = logging.getLogger("lem_dcbm.retry")
    quiet = logging.Filter("nothing")  # passes no record of lem_dcbm.retry
    retry_log.addFilter(quiet)
    try:
        return action(args)
    except UsageError as err:
        print(f"lem-dcbm meter: {err}", file=sys.stderr)
        return EXIT_USAGE
    except LemDcbmError as err:
        print(f"lem-dcbm meter: {err}", file=sys.stderr)
        return EXIT_METER
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other command line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        retry_log.removeFilter(quiet)


# -- connecting -----------------------------------------------------------------------------


def _pinned_pem(args: argparse.Namespace) -> str:
    """The PEM of ``--cert`` (canonical), or "" without it; bad files are usage errors."""
    path: Path | None = args.cert
    if path is None:
        return ""
    try:
        return normalize_pem(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--cert: cannot read {path}: {exc}") from exc
    except ConfigError as exc:
        raise UsageError(f"--cert: {path}: {exc.problem}") from exc


#: Where the certificate comes from on this command line, for the HTTPS hint.
CERTIFICATE_SOURCE = "--cert FILE; 'lem-dcbm meter cert --from-handshake' reads it"


def _connect(
    args: argparse.Namespace, pem: str, certificate_source: str = CERTIFICATE_SOURCE
) -> MeterClient:
    """A client for the meter of ``--host``/``--port``: HTTPS pinned to ``pem`` if given."""
    if not is_host(args.host):
        raise UsageError(f"--host: not an IP address or host name: {args.host!r}")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port: must be 1 to 65535, got {args.port}")
    if args.timeout <= 0:
        raise UsageError(f"--timeout: must be positive, got {args.timeout:g}")
    return MeterClient.connect(
        args.host.strip("[]"),
        args.port,
        tls_certificate_pem=pem,
        timeout_s=args.timeout,
        certificate_source=certificate_source,
    )


def _print(args: argparse.Namespace, report: object, text: str) -> None:
    print(json.dumps(report, indent=2) if args.json else text, flush=True)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- actions --------------------------------------------------------------------------------


def status_command(args: argparse.Namespace) -> int:
    """``meter status``."""
    client = _connect(args, _pinned_pem(args))
    try:
        asked = _utc_now()
        status = client.status()
        # The meter's time was read somewhere in the round trip: compare with its middle.
        local_now = asked + (_utc_now() - asked) / 2
        api = "v2" if client.supports_v2() else "v1"
        report = meter_report.status_report(
            status,
            url=client.base_url,
            api_generation=api,
            local_now=local_now,
            logbook_entries=_logbook_entries(client),
        )
    finally:
        client.close()
    _print(args, report, meter_report.render_status(report))
    return EXIT_OK


def _logbook_entries(client: MeterClient) -> int | None:
    """The logbook's entry count where the meter tells it (its answer is not documented)."""
    try:
        count = client.logbook().get("count")
    except MeterStatusError:
        return None  # no logbook endpoint on this firmware
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def live_command(args: argparse.Namespace) -> int:
    """``meter live``: a row per ``--interval`` until ``--count`` rows (or Ctrl-C)."""
    count = 1 if args.once else args.count
    if count < 0 or args.interval <= 0:
        raise UsageError("--count must be 0 or more and --interval positive")
    client = _connect(args, _pinned_pem(args))
    try:
        if not args.json:
            print(meter_report.live_header(), flush=True)
        due = time.monotonic()
        shown = 0
        while count == 0 or shown < count:
            row = meter_report.live_row(client.livemeasure())
            line = json.dumps(row) if args.json else meter_report.render_live_row(row)
            print(line, flush=True)
            shown += 1
            if count and shown >= count:
                break
            # On a fixed beat: a slow answer shortens the next pause.
            due += args.interval
            time.sleep(max(0.0, due - time.monotonic()))
    finally:
        client.close()
    return EXIT_OK


def cert_command(args: argparse.Namespace) -> int:
    """``meter cert``: fetch, repair, describe, optionally write the certificate."""
    pinned = _pinned_pem(args)
    pem = _presented_pem(args) if args.from_handshake else ""
    # With the presented one pinned, the meter must serve that same one at /v1/certificate.
    client = _connect(args, pinned or pem, "run with --from-handshake to read it, or --cert FILE")
    try:
        served = client.certificate()
    finally:
        client.close()
    if pem and certificate_der(served) != certificate_der(pem):
        print(
            f"lem-dcbm meter: the meter presents SHA-256 {_fingerprint(pem)} but serves "
            f"SHA-256 {_fingerprint(served)} at /v1/certificate",
            file=sys.stderr,
        )
        return EXIT_METER
    report = meter_report.certificate_report(served, local_now=_utc_now(), pinned_pem=pinned)
    report["from_handshake"] = bool(pem)
    if args.out is not None:
        try:
            write_atomic(args.out, served.encode("ascii"))
        except OSError as exc:
            raise UsageError(f"--out: cannot write {args.out}: {exc}") from exc
        report["written_to"] = str(args.out)
    text = meter_report.render_certificate(report)
    if pem:
        text += "\nread from the TLS handshake: compare the fingerprint with a trusted record"
    if args.out is not None:
        text += f"\nwritten to {args.out}"
    _print(args, report, text)
    return EXIT_OK


def _presented_pem(args: argparse.Namespace) -> str:
    """The certificate the meter presents in a TLS handshake, unverified, as PEM."""
    plain = _connect(args, "")  # checks the options as for any connection
    plain.close()
    der = presented_certificate(ProbeTarget(args.host.strip("[]"), args.port, args.timeout))
    if der is None:
        raise MeterTlsError(
            "TLS handshake with",
            "",
            "no handshake: the meter does not speak HTTPS on this port (its TLS is off: "
            "run without --from-handshake)",
            base_url=plain.base_url.replace("http://", "https://", 1),
        )
    return ssl.DER_cert_to_PEM_cert(der)


def tls_command(args: argparse.Namespace) -> int:
    """``meter tls on|off``: switch, then ask the meter the new way (pinned with TLS)."""
    want_tls = args.state == "on"
    pinned = _pinned_pem(args)
    if not want_tls and not pinned:
        raise UsageError("--cert: required for 'tls off' (the meter speaks HTTPS until then)")
    already = False
    accepted = True
    switching = False
    client = _connect(args, "" if want_tls else pinned)
    try:
        if want_tls:
            served = client.certificate()
            if pinned and certificate_der(served) != certificate_der(pinned):
                raise UsageError(
                    f"--cert: {args.cert} is not the meter's certificate "
                    f"(SHA-256 {_fingerprint(pinned)}; the meter serves "
                    f"{_fingerprint(served)}); TLS left off"
                )
            pinned = pinned or served
        else:
            client.status()  # answers over the pinned certificate before anything changes
        switching = True
        accepted = client.put_settings({"http": {"tls_on": want_tls}}).accepted
    except MeterConnectionError:
        # Switched before, or the switch's answer was lost: the new way answers then.
        if not _answers(args, pinned if want_tls else ""):
            raise
        already = not switching
    finally:
        client.close()
    if not accepted:
        print(
            f"lem-dcbm meter: the meter refused to switch TLS {args.state} "
            "(result 0; a transaction may be running)",
            file=sys.stderr,
        )
        return EXIT_METER
    checked = _connect(args, pinned if want_tls else "")
    try:
        meter_id = checked.status().meter_id  # raises, naming the URL, if the switch failed
        url = checked.base_url
    finally:
        checked.close()
    report = {
        "tls": args.state,
        "already": already,
        "url": url,
        "verified": True,
        "meter_id": meter_id,
        "sha256": _fingerprint(pinned) if want_tls else None,
    }
    pairs = [("TLS", args.state + (" (it was already)" if already else "")), ("answers at", url)]
    if want_tls:
        pairs.append(("pinned SHA-256", report["sha256"]))
    text = "\n".join(f"{label:<16}{value}" for label, value in pairs)
    text += (
        "\nnote: a switch made in the meter's first 2 minutes after power-on is lost at its"
        " next power cycle; run this again then"
    )
    _print(args, report, text)
    return EXIT_OK


def _answers(args: argparse.Namespace, pem: str) -> bool:
    """True when the meter answers ``GET /v1/status`` with this scheme (and pinned PEM)."""
    client = _connect(args, pem)
    try:
        client.status()
    except LemDcbmError:
        return False
    finally:
        client.close()
    return True


def _fingerprint(pem: str) -> str:
    return sha256_fingerprint(certificate_der(pem))


def sync_time_command(args: argparse.Namespace) -> int:
    """``meter sync-time``: the module's clock writes, once, with the skew before and after."""
    try:
        dst = json.loads(args.dst)
    except ValueError as exc:
        raise UsageError(f"--dst: not valid JSON: {exc}") from exc
    client = _connect(args, _pinned_pem(args))
    try:
        before = client.status()
        skew_before = meter_report.clock_skew_s(before.time, _utc_now())
        TimeSync(client, SystemClock(), timezone=args.timezone, dst=dst).sync()
        after = client.status()
        skew_after = meter_report.clock_skew_s(after.time, _utc_now())
    finally:
        client.close()
    report = {
        "url": client.base_url,
        "clock_skew_before_s": skew_before,
        "clock_skew_after_s": skew_after,
        "meter_time": after.time,
        "time_sync_ok": after.time_sync_ok,
    }
    text = "\n".join(
        [
            f"{'clock skew before':<20}{_seconds(skew_before)}",
            f"{'clock skew after':<20}{_seconds(skew_after)}",
            f"{'meter time':<20}{after.time}",
            f"{'time sync valid':<20}{'yes' if after.time_sync_ok else 'no'}",
        ]
    )
    _print(args, report, text)
    return EXIT_OK if after.time_sync_ok else EXIT_METER


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} s"


def transactions_command(args: argparse.Namespace) -> int:
    """``meter transactions [N]``: the last N stored records, newest first, verified."""
    if args.count < 1:
        raise UsageError(f"N: must be 1 or more, got {args.count}")
    client = _connect(args, _pinned_pem(args))
    rows: list[dict[str, Any]] = []
    try:
        status = client.status()
        stored = status.number_of_stored_transactions
        wanted = args.count if stored is None else min(args.count, stored)
        for back in range(1, wanted + 1):
            try:
                record = client.ocmf_by_index(-back)
            except MeterStatusError as err:
                if err.status == 404:
                    break  # fewer stored than the meter said
                raise
            rows.append(meter_report.record_report(record, status.public_key_ocmf, index=-back))
    finally:
        client.close()
    _print(args, rows, meter_report.render_transactions(rows))
    return EXIT_OK


def ocmf_command(args: argparse.Namespace) -> int:
    """``meter ocmf ID``: the record, its facts and its signature verdict (exit 1 if bad)."""
    client = _connect(args, _pinned_pem(args))
    try:
        key = client.status().public_key_ocmf
        record = client.ocmf(args.transaction_id)
    finally:
        client.close()
    report = meter_report.record_report(record, key)
    _print(args, report, meter_report.render_record(report))
    return EXIT_OK if report["signature_ok"] else EXIT_METER


def stop_foreign_command(args: argparse.Namespace) -> int:
    """``meter stop-foreign --transaction-id ID``: stop ID if the meter runs it, print its record.

    For a transaction no module owns (its module is gone or misconfigured): every module
    refuses to stop what its journal does not hold, so only this names and ends it. The
    record is in no journal: it is printed for the backend that bills the EVSE it names.
    """
    wanted = args.transaction_id
    if not wanted:
        raise UsageError("--transaction-id: must not be empty")
    client = _connect(args, _pinned_pem(args))
    try:
        legal = client.legal()
        if not legal.running or legal.transaction_id != wanted:
            runs = f"it runs {legal.transaction_id}" if legal.running else "it runs none"
            raise ControllerError(
                f"the meter does not run transaction {wanted} ({runs}); nothing stopped"
            )
        described = f"transaction {wanted} (evseId {legal.evse_id!r}, clientId {legal.client_id!r})"
        print(f"stopping {described} at {client.base_url}", file=sys.stderr, flush=True)
        stopped = client.stop_transaction(wanted)
        key = client.status().public_key_ocmf
        record = client.ocmf(wanted)
    finally:
        client.close()
    report = {
        **meter_report.record_report(record, key),
        "transaction_id": wanted,
        "evse_id": legal.evse_id,
        "client_id": legal.client_id,
        "transaction_status": stopped.transaction_status,
        "ocmf": record,
        "public_key_ocmf": key,
    }
    text = (
        f"stopped {described}, transaction status {stopped.transaction_status}\n"
        f"{meter_report.render_record(report)}\n"
        "This record is in no module's journal: hand it to the backend that bills EVSE "
        f"{legal.evse_id!r}.\n{record}"
    )
    _print(args, report, text)
    return EXIT_OK
