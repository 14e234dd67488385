"""``lem-dcbm watch`` and ``lem-dcbm call``: the integrator's view of a running module."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

from lem_dcbm.cli_common import add_broker_arguments, broker_from_args
from lem_dcbm.errors import ConfigError
from lem_dcbm.health import positive_seconds
from lem_dcbm.json_types import JsonObject
from lem_dcbm.tools import table
from lem_dcbm.tools.api_client import VAR_TOPICS, ApiClient
from lem_dcbm.tools.consumer import ConsumerError, EverestConsumer, result_json

#: The module protocol's consumer, or the API's bridge stand-in: same calls.
Consumer: TypeAlias = EverestConsumer | ApiClient

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3


#: The module id every example uses (``active_modules: powermeter_1:``).
DEFAULT_MODULE_ID = "powermeter_1"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--module-id", default=DEFAULT_MODULE_ID, help="the module's id under active_modules"
    )
    parser.add_argument(
        "--everest-api",
        action="store_true",
        help="the module serves EVerest's powermeter API: play its powermeter_API bridge "
        "(--module-id names the bridge)",
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the module: for the answer to a call (the call then "
        "expires in the broker), for each value of watch",
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
        help="the transaction's id (default: a new UUID for a start; a stop needs one, or --any)",
    )
    parser.add_argument(
        "--any",
        action="store_true",
        help="stop_transaction without --transaction-id: stop whatever transaction runs "
        "(sends the empty id, as EvseManager does at boot); off by default",
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


def start_arguments(args: argparse.Namespace) -> JsonObject:
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
        arguments = {"transaction_id": args.transaction_id or ""}  # "" only with --any
    result = consumer.call(args.cmd, arguments, args.timeout)
    print(result_json(result))
    ok = not result.error_type and isinstance(result.retval, dict)
    return 0 if ok and result.retval.get("status") == "OK" else EXIT_ERROR


def _watch(consumer: Consumer, args: argparse.Namespace) -> int:
    values: queue.SimpleQueue[Any] = queue.SimpleQueue()
    rows = 0
    print(table.header(), flush=True)
    consumer.on_var("powermeter", values.put)
    # The other protocol listened to as well: a module in the other mode is then named.
    other = _other_mode(consumer, args)
    try:
        while not args.count or rows < args.count:
            try:
                value = values.get(timeout=args.timeout)
            except queue.Empty:
                print(_no_values(consumer, args, rows, other), file=sys.stderr)
                return EXIT_NO_ANSWER
            print(table.row(value), flush=True)
            rows += 1
    except KeyboardInterrupt:
        pass
    finally:
        if other is not None:
            other[0].close()
    return 0


def _other_mode(
    consumer: Consumer, args: argparse.Namespace
) -> tuple[Consumer, queue.SimpleQueue[object]] | None:
    """A consumer of the protocol not asked for, and what it hears; None if unreachable."""
    broker = broker_from_args(args)
    other: Consumer = (
        EverestConsumer(broker, args.module_id)
        if isinstance(consumer, ApiClient)
        else ApiClient(broker, args.module_id)
    )
    heard: queue.SimpleQueue[object] = queue.SimpleQueue()
    try:
        other.connect()
        other.on_var("powermeter", heard.put)
    except ConsumerError:
        other.close()
        return None
    return other, heard


def _no_values(
    consumer: Consumer,
    args: argparse.Namespace,
    rows: int,
    other: tuple[Consumer, queue.SimpleQueue[object]] | None = None,
) -> str:
    """Why watch stops: which module id and topic stayed silent, for how long."""
    topic = _powermeter_topic(consumer)
    if not rows and other is not None and not other[1].empty():
        if isinstance(consumer, ApiClient):
            return (
                f"lem-dcbm watch: module {args.module_id} speaks the EVerest module protocol "
                f"(values on {_powermeter_topic(other[0])}), not EVerest's powermeter API: "
                "run without --everest-api"
            )
        return (
            f"lem-dcbm watch: module {args.module_id} serves EVerest's powermeter API "
            f"(values on {_powermeter_topic(other[0])}), not the module protocol: "
            "add --everest-api"
        )
    if rows:
        return (
            f"lem-dcbm watch: module {args.module_id} published nothing for "
            f"{args.timeout:g} s after {rows} values (watched {topic})"
        )
    return (
        f"lem-dcbm watch: no value from module {args.module_id} within {args.timeout:g} s "
        f"(watched {topic}); is the module running, its meter answering, and are the module "
        "id and --prefix right?"
    )


def _powermeter_topic(consumer: Consumer) -> str:
    if isinstance(consumer, ApiClient):
        return consumer.topics.m2e(VAR_TOPICS["powermeter"])
    return consumer.topics.var("powermeter")


def watch_command(args: argparse.Namespace) -> int:
    """``lem-dcbm watch``: exit 0 after ``--count`` rows or Ctrl-C, 3 without rows in time."""
    return _with_consumer(args, _watch)


def call_command(args: argparse.Namespace) -> int:
    """``lem-dcbm call``: exit 0 on an OK result, 1 on a failed command, 3 on no answer."""
    stop_any = args.cmd == "stop_transaction" and not args.transaction_id
    if stop_any and args.args is None and not args.any:
        # An empty id stops whatever runs: never by omission.
        print(
            "lem-dcbm call: stop_transaction needs --transaction-id ID, or --any to stop "
            "whatever transaction runs",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return _with_consumer(args, _call)


def _with_consumer(
    args: argparse.Namespace, action: Callable[[Consumer, argparse.Namespace], int]
) -> int:
    try:
        broker = broker_from_args(args)
    except ConfigError as err:
        print(f"lem-dcbm {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    # A call expires in the broker when this command stops waiting for it.
    consumer: Consumer = (
        ApiClient(broker, args.module_id)
        if args.everest_api
        else EverestConsumer(broker, args.module_id, expiring_calls=args.command == "call")
    )
    try:
        consumer.connect()
        return action(consumer, args)
    except ConsumerError as err:
        print(f"lem-dcbm {args.command}: {err}", file=sys.stderr)
        return EXIT_NO_ANSWER
    finally:
        consumer.close()
