"""``lem-dcbm watch`` and ``lem-dcbm call``: the integrator's view of a running module."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from lem_dcbm.config import broker_settings
from lem_dcbm.errors import ConfigError
from lem_dcbm.tools import table
from lem_dcbm.tools.consumer import ConsumerError, EverestConsumer, result_json

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--module-id", default="powermeter", help="the module's id")
    parser.add_argument("--broker-host")
    parser.add_argument("--broker-port", type=int)
    parser.add_argument("--broker-socket")
    parser.add_argument("--prefix")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")


def build_parser() -> argparse.ArgumentParser:
    """Parser for ``watch`` and ``call``."""
    parser = argparse.ArgumentParser(prog="lem-dcbm")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("watch", help="print the powermeter var as a live table")
    _common(watch)
    watch.add_argument("--count", type=int, default=0, help="stop after N rows (0: never)")
    call = sub.add_parser("call", help="call start_transaction or stop_transaction")
    _common(call)
    call.add_argument("cmd", choices=["start_transaction", "stop_transaction"])
    call.add_argument("--transaction-id", default=None, help="default: a new UUID for a start")
    call.add_argument("--evse-id", default="DE*LEM*E0001")
    call.add_argument("--id-data", default="", help="identification_data (e.g. an RFID UID)")
    call.add_argument("--id-type", default="ISO14443")
    call.add_argument("--tariff-text", default=None)
    call.add_argument("--args", default=None, help="the command's arguments as raw JSON")
    return parser


def start_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TransactionReq`` built from the flags."""
    value: dict[str, Any] = {
        "evse_id": args.evse_id,
        "transaction_id": args.transaction_id or str(uuid.uuid4()),
        "identification_status": "ASSIGNED",
        "identification_type": args.id_type,
        "identification_flags": [],
    }
    if args.id_data:
        value["identification_data"] = args.id_data
    if args.tariff_text is not None:
        value["tariff_text"] = args.tariff_text
    return {"value": value}


def _call(consumer: EverestConsumer, args: argparse.Namespace) -> int:
    if args.args is not None:
        try:
            arguments = json.loads(args.args)
        except ValueError as err:
            print(f"lem-dcbm call: --args is not JSON: {err}", file=sys.stderr)
            return EXIT_USAGE
    elif args.cmd == "start_transaction":
        arguments = start_arguments(args)
    else:
        arguments = {"transaction_id": args.transaction_id or ""}
    result = consumer.call(args.cmd, arguments, args.timeout)
    print(result_json(result))
    ok = not result.error_type and isinstance(result.retval, dict)
    return 0 if ok and result.retval.get("status") == "OK" else EXIT_ERROR


def _watch(consumer: EverestConsumer, args: argparse.Namespace) -> int:
    done = threading.Event()
    rows = 0
    print(table.header(), flush=True)

    def show(value: Any) -> None:
        nonlocal rows
        print(table.row(value), flush=True)
        rows += 1
        if args.count and rows >= args.count:
            done.set()

    consumer.on_var("powermeter", show)
    try:
        if not done.wait(args.timeout if args.count else None):
            print(f"lem-dcbm watch: {rows} rows within {args.timeout:.0f} s", file=sys.stderr)
            return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str]) -> int:
    """Run ``watch`` or ``call``; exit 0 on success, 1 on a failed command, 3 on no answer."""
    args = build_parser().parse_args(list(argv))
    try:
        broker = broker_settings(
            host=args.broker_host,
            port=args.broker_port,
            socket_path=args.broker_socket,
            prefix=args.prefix,
        )
    except ConfigError as err:
        print(f"lem-dcbm {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    consumer = EverestConsumer(broker, args.module_id)
    try:
        consumer.connect()
        return _call(consumer, args) if args.command == "call" else _watch(consumer, args)
    except ConsumerError as err:
        print(f"lem-dcbm {args.command}: {err}", file=sys.stderr)
        return EXIT_NO_ANSWER
    finally:
        consumer.close()
