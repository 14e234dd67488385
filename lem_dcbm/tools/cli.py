"""``lem-dcbm watch`` and ``lem-dcbm call``: the integrator's view of a running module."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

from lem_dcbm.cli_common import add_broker_arguments, broker_from_args
from lem_dcbm.errors import ConfigError
from lem_dcbm.tools import table
from lem_dcbm.tools.api_client import ApiClient
from lem_dcbm.tools.consumer import ConsumerError, EverestConsumer, result_json

#: The module protocol's consumer, or the API's bridge stand-in: same calls.
Consumer: TypeAlias = EverestConsumer | ApiClient

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--module-id", default="powermeter", help="the module's id")
    parser.add_argument(
        "--everest-api",
        action="store_true",
        help="the module serves EVerest's powermeter API: play its powermeter_API bridge "
        "(--module-id names the bridge)",
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the module's answer"
    )


def configure_watch(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``lem-dcbm watch``."""
    _common(parser)
    parser.add_argument("--count", type=int, default=0, help="stop after this many rows (0: never)")
    parser.set_defaults(handler=watch_command)


def configure_call(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``lem-dcbm call``."""
    _common(parser)
    parser.add_argument(
        "cmd", choices=["start_transaction", "stop_transaction"], help="the command to call"
    )
    parser.add_argument(
        "--transaction-id",
        default=None,
        help='the transaction\'s id (default: a new UUID for a start, "" for a stop)',
    )
    parser.add_argument("--evse-id", default="DE*LEM*E0001", help="evse_id of a start")
    parser.add_argument(
        "--id-data", default="", help="identification_data of a start (e.g. an RFID UID)"
    )
    parser.add_argument("--id-type", default="ISO14443", help="identification_type of a start")
    parser.add_argument(
        "--tariff-text", default=None, help="tariff_text of a start (default: none sent)"
    )
    parser.add_argument(
        "--args",
        default=None,
        help="the command's arguments as raw JSON, instead of the options above "
        "(default: built from the options)",
    )
    parser.set_defaults(handler=call_command)


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


def _call(consumer: Consumer, args: argparse.Namespace) -> int:
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


def _watch(consumer: Consumer, args: argparse.Namespace) -> int:
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


def watch_command(args: argparse.Namespace) -> int:
    """``lem-dcbm watch``: exit 0 after ``--count`` rows or Ctrl-C, 3 without rows in time."""
    return _with_consumer(args, _watch)


def call_command(args: argparse.Namespace) -> int:
    """``lem-dcbm call``: exit 0 on an OK result, 1 on a failed command, 3 on no answer."""
    return _with_consumer(args, _call)


def _with_consumer(
    args: argparse.Namespace, action: Callable[[Consumer, argparse.Namespace], int]
) -> int:
    try:
        broker = broker_from_args(args)
    except ConfigError as err:
        print(f"lem-dcbm {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    consumer: Consumer = (
        ApiClient(broker, args.module_id)
        if args.everest_api
        else EverestConsumer(broker, args.module_id)
    )
    try:
        consumer.connect()
        return action(consumer, args)
    except ConsumerError as err:
        print(f"lem-dcbm {args.command}: {err}", file=sys.stderr)
        return EXIT_NO_ANSWER
    finally:
        consumer.close()
