"""What every ``lem-dcbm`` subcommand shares: help layout, lazy registration, broker options.

The one ``lem-dcbm`` parser (:func:`lem_dcbm.cli.build_parser`) names each subcommand with
a :class:`Command`; the subcommand's arguments are defined once, next to its code, in a
``configure(parser)`` function that also sets ``handler``, the function that runs it.
That function's module is imported only when the subcommand is used: ``lem-dcbm run``
then never loads the simulator or the MQTT tools (about 2 MB of memory for the module).
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from lem_dcbm.config import BrokerSettings

#: Runs a parsed subcommand and returns the process exit code.
Handler: TypeAlias = Callable[[argparse.Namespace], int]
#: What ``add_subparsers`` returns: nested subcommands are added to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand of ``lem-dcbm``: its name, one line of help, where its arguments live."""

    name: str
    help: str
    #: ``"module:function"``; the function adds the arguments and sets ``handler``.
    configure: str


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default after its help, unless the help names it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        # None and SUPPRESS say nothing; a flag (nargs 0) is simply off unless given.
        if (
            "default" in text
            or not action.option_strings
            or action.nargs == 0
            or default is None
            or default == argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: {'empty' if default == '' else '%(default)s'})"


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that takes its arguments from its ``configure`` when first used."""

    def __init__(self, *args: Any, configure: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._configure = configure

    def load(self) -> CommandParser:
        """Add the subcommand's arguments now (once); return the parser."""
        if self._configure:
            module_name, _, function = self._configure.partition(":")
            self._configure = ""
            getattr(importlib.import_module(module_name), function)(self)
        return self

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse like argparse, after adding the arguments (argparse calls this per subcommand)."""
        self.load()
        if namespace is None:
            return super().parse_known_args(args)
        return super().parse_known_args(args, namespace)


def add_commands(parser: argparse.ArgumentParser, commands: Sequence[Command]) -> None:
    """Add ``commands`` as the subcommands of ``parser``; one of them is required."""
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    for command in commands:
        sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            configure=command.configure,
        )


def add_command(
    sub: Subcommands, name: str, *, help: str, handler: Handler
) -> argparse.ArgumentParser:
    """Add a nested subcommand (``records list``...) that ``handler`` runs."""
    parser = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def add_broker_arguments(parser: argparse.ArgumentParser, *, prefix: bool = True) -> None:
    """The MQTT broker options, and the EVerest topic prefix unless ``prefix`` is False."""
    parser.add_argument(
        "--broker-host", help="MQTT broker host (default: $EV_MQTT_BROKER_HOST, else localhost)"
    )
    parser.add_argument(
        "--broker-port",
        type=int,
        help="MQTT broker port (default: $EV_MQTT_BROKER_PORT, else 1883)",
    )
    parser.add_argument(
        "--broker-socket",
        help="MQTT broker unix socket, used instead of host and port "
        "(default: $EV_MQTT_BROKER_SOCKET_PATH when neither host nor port is given)",
    )
    security = parser.add_argument_group("broker security")
    security.add_argument(
        "--broker-username", help="user name (default: $EV_MQTT_USERNAME, else none)"
    )
    security.add_argument(
        "--broker-password-file",
        help="file holding the password (default: $EV_MQTT_PASSWORD_FILE, "
        "else the password itself in $EV_MQTT_PASSWORD)",
    )
    security.add_argument(
        "--broker-password",
        action=RefusePassword,
        help="refused, without a default: a command line is visible to every user (ps)",
    )
    security.add_argument(
        "--broker-tls-ca",
        help="CA file (PEM) of the broker; enables TLS (default: $EV_MQTT_TLS_CA_FILE)",
    )
    security.add_argument(
        "--broker-tls-cert",
        help="client certificate (PEM) (default: $EV_MQTT_TLS_CERT_FILE, else none)",
    )
    security.add_argument(
        "--broker-tls-key",
        help="key of the client certificate (PEM) (default: $EV_MQTT_TLS_KEY_FILE, "
        "else in the certificate file)",
    )
    if prefix:
        parser.add_argument(
            "--prefix",
            help="EVerest topic prefix (default: $EV_MQTT_EVEREST_PREFIX, else everest/)",
        )


class RefusePassword(argparse.Action):
    """``--broker-password``: an error that says where a password belongs instead."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        """Stop with a usage error; the value is never repeated."""
        parser.error(
            "--broker-password is refused: a command line shows in ps; "
            "use --broker-password-file, $EV_MQTT_PASSWORD_FILE or $EV_MQTT_PASSWORD"
        )


def broker_from_args(args: argparse.Namespace) -> BrokerSettings:
    """Broker settings from the options, falling back to the ``EV_MQTT_*`` environment."""
    from lem_dcbm.config import BrokerCredentials, broker_settings

    return broker_settings(
        host=args.broker_host,
        port=args.broker_port,
        socket_path=args.broker_socket,
        prefix=getattr(args, "prefix", None),
        credentials=BrokerCredentials(
            username=args.broker_username,
            password_file=args.broker_password_file,
            tls_ca_file=args.broker_tls_ca,
            tls_cert_file=args.broker_tls_cert,
            tls_key_file=args.broker_tls_key,
        ),
        env=os.environ,
    )
