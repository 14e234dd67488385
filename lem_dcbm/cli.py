"""The ``lem-dcbm`` command: one parser with every subcommand (run, simulate, tools)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lem_dcbm import __version__
from lem_dcbm.cli_common import (
    Command,
    Handler,
    HelpFormatter,
    add_broker_arguments,
    add_commands,
    broker_from_args,
)
from lem_dcbm.config import BrokerSettings, broker_settings
from lem_dcbm.errors import ConfigError

if TYPE_CHECKING:
    from lem_dcbm.service import Service

_LOGGER = logging.getLogger(__name__)

#: Exit code for a configuration error (one line on stderr names the key).
EXIT_CONFIG = 2
#: Exit code when the module cannot run for another reason (said on stderr).
EXIT_FAILURE = 1


#: The subcommands; each one's arguments are defined by its ``configure`` function.
COMMANDS = (
    Command(
        "run", "run the module against a meter, from a config file", "lem_dcbm.cli:configure_run"
    ),
    Command("simulate", "run a simulated LEM DCBM meter", "lem_dcbm.simulator.cli:configure"),
    Command(
        "watch", "show the powermeter var of a running module", "lem_dcbm.tools.cli:configure_watch"
    ),
    Command("call", "call a command of a running module", "lem_dcbm.tools.cli:configure_call"),
    Command(
        "health",
        "exit 0 while the running module's heartbeat is fresh",
        "lem_dcbm.health:configure",
    ),
    Command("ocmf", "check signed OCMF records", "lem_dcbm.tools.ocmf_verify:configure"),
    Command(
        "records",
        "list, export or resend the signed records in the module's journal",
        "lem_dcbm.tools.records:configure",
    ),
    Command(
        "meter",
        "commission a meter over its REST API: status, live values, certificate, TLS, clock",
        "lem_dcbm.tools.meter_cli:configure",
    ),
)


def configure_run(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``lem-dcbm run``."""
    parser.add_argument("--config", required=True, type=Path, help="EVerest config file (YAML)")
    parser.add_argument(
        "--module-id",
        help="module id under active_modules (default: the only lem-dcbm module in the file); "
        "with --everest-api also the id of EVerest's powermeter_API module",
    )
    parser.add_argument(
        "--everest-api",
        action="store_true",
        help="serve EVerest's external powermeter API (everest_api/1/powermeter/ID) instead "
        "of the module protocol; also $LEM_DCBM_EVEREST_API=1 (docs/everest-api.md)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the config, broker settings and installation, say where the journal "
        "goes, and exit (0, or 2 on a bad config) without connecting to anything",
    )
    add_broker_arguments(parser)
    add_log_arguments(parser)
    parser.set_defaults(handler=run_command)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``, falling back to their ``LEM_DCBM_*`` variables."""
    from lem_dcbm.logsetup import LOG_FORMATS, LOG_LEVELS

    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="least severe level logged (default: $LEM_DCBM_LOG_LEVEL, else INFO)",
    )
    logs.add_argument(
        "--log-format",
        type=str.lower,
        choices=LOG_FORMATS,
        help="text: one line per event for people; json: one JSON object per line "
        "(time, level, module_id, logger, message) for log shippers "
        "(default: $LEM_DCBM_LOG_FORMAT, else text)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The one ``lem-dcbm`` parser, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lem-dcbm",
        description="EVerest powermeter module for the LEM DCBM 400/600 DC energy meter.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lem-dcbm {__version__}")
    add_commands(parser, COMMANDS)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """``lem-dcbm run``: load the config (exit 2 on a bad one), then serve until stopped."""
    from lem_dcbm.config import load_everest_config_file
    from lem_dcbm.everest_api.mode import api_mode
    from lem_dcbm.logsetup import HeldRecords, configure_logging, log_options

    # The config's warnings (a clamped value) wait for logging, which needs the module id.
    with HeldRecords("lem_dcbm.config") as held:
        try:
            level, log_format = log_options(args.log_level, args.log_format)
            module_id, config = load_everest_config_file(args.config, args.module_id)
            if config.interface:
                # What serving checks when it opens the meter connection: --check as well.
                from lem_dcbm.meter.transport import interface_socket_options

                interface_socket_options(config.interface)
            broker = broker_from_args(args)
            everest_api = api_mode(args.everest_api, os.environ)
        except ConfigError as err:
            print(f"lem-dcbm: configuration error: {err}", file=sys.stderr)
            return EXIT_CONFIG
    if args.check:
        for message in held.messages:
            print(f"lem-dcbm: warning: {message}", file=sys.stderr)
        return _check(module_id, config.journal_dir, broker)
    configure_logging(module_id, level, log_format)
    held.replay()
    return _serve(
        module_id,
        broker,
        os.environ,
        lambda service: service.run_standalone(config),
        everest_api=everest_api,
    )


def _check(module_id: str, journal_dir: str, broker: BrokerSettings) -> int:
    """``run --check``: the config is valid; import what serving needs, say where things go."""
    from lem_dcbm.health import health_file_path
    from lem_dcbm.service import journal_directory

    print(
        f"lem-dcbm: config of {module_id} is valid; broker {broker.describe()}, prefix "
        f"{broker.prefix}; journal {journal_directory(journal_dir, module_id)}; "
        f"heartbeat {health_file_path(module_id)}"
    )
    return 0


def run_under_manager(module_id: str, environ: Mapping[str, str]) -> int:
    """Manager mode: broker from EV_MQTT_*, config from the manager, exit 0 on shutdown."""
    from lem_dcbm.config import config_from_manager_parameters
    from lem_dcbm.logsetup import configure_logging, log_options

    try:
        level, log_format = log_options(None, None, environ)
    except ConfigError as err:
        print(f"lem-dcbm: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(module_id, level, log_format)
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
    *,
    everest_api: bool = False,
) -> int:
    """Run a service with heartbeat and signal handling; a config error exits with 2."""
    from lem_dcbm.everest.manager import ManagerError
    from lem_dcbm.everest.presence import DuplicateInstance
    from lem_dcbm.health import Heartbeat, health_file_path, register_health, remove_health
    from lem_dcbm.malloc_arenas import limit_malloc_arenas
    from lem_dcbm.service import Service

    # Before the service starts its threads.
    limit_malloc_arenas()
    heartbeat = health_file_path(module_id, environ)
    # Healthy means publishing live values: no beat while the meter does not answer, and
    # none left from an earlier run.
    register_health(heartbeat)
    beat = Heartbeat(heartbeat)
    service = Service(
        module_id,
        broker,
        on_meter_answer=beat.touch,
        everest_api=everest_api,
    )
    service.install_signal_handlers()
    try:
        return run(service)
    except ConfigError as err:
        print(f"lem-dcbm: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ManagerError as err:
        print(f"lem-dcbm: no configuration from the EVerest manager: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except DuplicateInstance as err:
        print(f"lem-dcbm: {err}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        beat.close()
        remove_health(heartbeat)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lem-dcbm`` console script."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
