"""The ``lem-dcbm`` command: run the module, simulate a meter, watch, call, health."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lem_dcbm import __version__
from lem_dcbm.config import BrokerSettings, broker_settings
from lem_dcbm.errors import ConfigError

if TYPE_CHECKING:
    from lem_dcbm.service import Service

_LOGGER = logging.getLogger(__name__)

#: Exit code for a configuration error (one line on stderr names the key).
EXIT_CONFIG = 2
#: Exit code when the module cannot run for another reason (said on stderr).
EXIT_FAILURE = 1


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """Broker and topic options shared by run, watch and call."""
    parser.add_argument("--broker-host", help="MQTT broker host (env EV_MQTT_BROKER_HOST)")
    parser.add_argument(
        "--broker-port", type=int, help="MQTT broker port (env EV_MQTT_BROKER_PORT)"
    )
    parser.add_argument(
        "--broker-socket", help="MQTT broker unix socket (env EV_MQTT_BROKER_SOCKET_PATH)"
    )
    parser.add_argument("--prefix", help="EVerest topic prefix (env EV_MQTT_EVEREST_PREFIX)")


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the module against a meter, from a config file")
    run.add_argument("--config", required=True, type=Path, help="EVerest config file (YAML)")
    run.add_argument("--module-id", help="module id under active_modules (default: the only one)")
    add_broker_arguments(run)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; ``simulate`` takes the simulator's own arguments."""
    parser = argparse.ArgumentParser(
        prog="lem-dcbm",
        description="EVerest powermeter module for the LEM DCBM 400/600 DC energy meter.",
    )
    parser.add_argument("--version", action="version", version=f"lem-dcbm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    sub.add_parser("simulate", help="run a simulated LEM DCBM meter", add_help=False)
    sub.add_parser("watch", help="show the powermeter var of a running module", add_help=False)
    sub.add_parser("call", help="call a command of a running module", add_help=False)
    sub.add_parser("health", help="exit 0 while the running module's heartbeat is fresh")
    sub.add_parser("ocmf", help="check a signed OCMF record (ocmf verify)", add_help=False)
    sub.add_parser("records", help="list, export or resend the journal's records", add_help=False)
    return parser


def broker_from_args(args: argparse.Namespace) -> BrokerSettings:
    """Broker settings from flags, falling back to the EV_MQTT_* environment."""
    return broker_settings(
        host=args.broker_host,
        port=args.broker_port,
        socket_path=args.broker_socket,
        prefix=args.prefix,
        env=os.environ,
    )


def run_command(args: argparse.Namespace) -> int:
    """``lem-dcbm run``: load the config (exit 2 on a bad one), then serve until stopped."""
    from lem_dcbm.config import load_everest_config_file
    from lem_dcbm.logsetup import configure_logging

    try:
        module_id, config = load_everest_config_file(args.config, args.module_id)
        broker = broker_from_args(args)
    except ConfigError as err:
        print(f"lem-dcbm: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(module_id)
    return _serve(module_id, broker, os.environ, lambda service: service.run_standalone(config))


def run_under_manager(module_id: str, environ: Mapping[str, str]) -> int:
    """Manager mode: broker from EV_MQTT_*, config from the manager, exit 0 on shutdown."""
    from lem_dcbm.config import config_from_manager_parameters
    from lem_dcbm.logsetup import configure_logging

    configure_logging(module_id)
    try:
        broker = broker_settings(env=environ)
    except ConfigError as err:
        print(f"lem-dcbm: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    return _serve(
        module_id,
        broker,
        environ,
        lambda service: service.run_with_manager(config_from_manager_parameters),
    )


def _serve(
    module_id: str,
    broker: BrokerSettings,
    environ: Mapping[str, str],
    run: Callable[[Service], int],
) -> int:
    """Run a service with heartbeat and signal handling; a config error exits with 2."""
    from lem_dcbm.everest.manager import ManagerError
    from lem_dcbm.health import health_file_path, touch_health
    from lem_dcbm.service import Service

    heartbeat = health_file_path(environ)
    # Healthy means publishing live values: no beat while the meter does not answer.
    service = Service(module_id, broker, on_meter_answer=lambda: touch_health(heartbeat))
    service.install_signal_handlers()
    try:
        return run(service)
    except ConfigError as err:
        print(f"lem-dcbm: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ManagerError as err:
        print(f"lem-dcbm: no configuration from the EVerest manager: {err}", file=sys.stderr)
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lem-dcbm`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulate":
        from lem_dcbm.simulator.cli import main as simulate_main

        return simulate_main(args_list[1:])
    if args_list and args_list[0] in ("watch", "call"):
        from lem_dcbm.tools.cli import main as tools_main

        return tools_main(args_list)
    if args_list and args_list[0] in ("ocmf", "records"):
        from lem_dcbm.records.cli import main as records_main

        return records_main(args_list)
    if args_list and args_list[0] == "health":
        from lem_dcbm.health import health_main

        return health_main(args_list[1:])
    args = build_parser().parse_args(args_list)
    if args.command == "run":
        return run_command(args)
    return 2  # argparse already refused anything else


if __name__ == "__main__":
    sys.exit(main())
