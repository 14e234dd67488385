"""``lem-dcbm simulate`` / ``python -m lem_dcbm.simulator``: run a simulated meter.

The options are defined once, in :func:`configure`, for both commands.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from lem_dcbm.cli_common import HelpFormatter
from lem_dcbm.clock import SystemClock
from lem_dcbm.simulator.certs import load_or_create_certificate, meter_pem_form
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.load_source import LoadFollower, MqttLoadSource
from lem_dcbm.simulator.logbook import LOGBOOK_CAPACITY
from lem_dcbm.simulator.ocmf_signer import OcmfSigner
from lem_dcbm.simulator.ring import LOOKUP_WINDOW, RING_CAPACITY
from lem_dcbm.simulator.server import MeterServer, server_tls_context

_LOGGER = logging.getLogger(__name__)

#: Firmware reported when ``--firmware`` is not given, per ``--api``.
DEFAULT_FIRMWARE = {"v1": "MU-0.1.4.0", "v2": "MU-2.3.0.1"}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lem_dcbm.simulator``: the options of ``lem-dcbm simulate``."""
    parser = argparse.ArgumentParser(
        prog="python -m lem_dcbm.simulator",
        description="A simulated LEM DCBM 400/600 energy meter over HTTP or HTTPS.",
        formatter_class=HelpFormatter,
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    """The simulator's options, for ``lem-dcbm simulate`` and ``python -m lem_dcbm.simulator``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (http.tls_on)")
    parser.add_argument(
        "--cert-out",
        type=Path,
        help="write (or reuse) the TLS certificate here (default: kept in memory only)",
    )
    parser.add_argument(
        "--key-out",
        type=Path,
        help="write (or reuse) the TLS private key here (default: kept in memory only)",
    )
    parser.add_argument(
        "--min-transaction-seconds",
        type=float,
        default=120.0,
        help="a stop earlier than this after the start is refused (meter: 120)",
    )
    parser.add_argument("--firmware", help="applicationFirmwareVersion (default per --api)")
    parser.add_argument(
        "--api",
        choices=("v1", "v2"),
        default="v2",
        help="v2 serves /v1 and /v2 paths; v1 answers 404 on every /v2 path",
    )
    parser.add_argument("--meter-id", default="12024072805", help="meterId (digits)")
    parser.add_argument("--unsynced", action="store_true", help="start without a valid time sync")
    parser.add_argument(
        "--settings-window-seconds",
        type=float,
        default=120.0,
        help="settings written this soon after power-on are not persisted (meter: 120)",
    )
    parser.add_argument(
        "--time-sync-validity-seconds",
        type=float,
        default=172800.0,
        help="a time sync expires this long after it was made (meter: 48 h)",
    )
    limits = parser.add_argument_group(
        "the meter's limits", "start at a limit, so that tests reach it without waiting"
    )
    limits.add_argument(
        "--ring-capacity",
        type=int,
        default=RING_CAPACITY,
        help="transaction records the meter keeps, the oldest overwritten (meter: 20 399)",
    )
    limits.add_argument(
        "--lookup-window",
        type=int,
        default=LOOKUP_WINDOW,
        help="transactions GET /ocmf?transactionId= searches back (meter: 840)",
    )
    limits.add_argument(
        "--ring-filled",
        type=int,
        default=0,
        help="transactions made before this start (--ring-capacity or more: a full ring)",
    )
    limits.add_argument(
        "--logbook-capacity",
        type=int,
        default=LOGBOOK_CAPACITY,
        help="events the logbook holds before logbookIsFull (meter: about 40 000)",
    )
    limits.add_argument(
        "--logbook-filled", type=int, default=0, help="events logged before this start"
    )
    limits.add_argument(
        "--sync-expires-in-seconds",
        type=float,
        help="the time sync made before this start expires this soon "
        "(default: valid for the full --time-sync-validity-seconds)",
    )
    limits.add_argument(
        "--ntp-answer-seconds",
        type=float,
        default=0.0,
        help="an NTP sync takes this long (meter: up to 30 s); a start aborts it",
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        help="PEM EC P-256 key for OCMF; generated there if absent "
        "(default: a new key in memory at every start)",
    )
    parser.add_argument(
        "--idle-timeout-seconds",
        type=float,
        default=30.0,
        help="close keep-alive connections idle this long",
    )
    parser.add_argument(
        "--load-from-mqtt",
        metavar="TOPIC",
        help="meter the load published on this MQTT topic (an EVerest Powermeter, e.g. "
        "YetiSimulator's powermeter variable) (default: none; the load set by /_sim/load)",
    )
    parser.add_argument(
        "--load-broker",
        metavar="HOST:PORT",
        default="127.0.0.1:1883",
        help="the broker of --load-from-mqtt",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level")
    parser.set_defaults(handler=simulate_command)


def main(argv: list[str] | None = None) -> int:
    """``python -m lem_dcbm.simulator``: run the simulator until SIGTERM or SIGINT."""
    return simulate_command(build_parser().parse_args(argv))


def simulate_command(args: argparse.Namespace) -> int:
    """Run the simulator until SIGTERM or SIGINT; return the exit code."""
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not args.meter_id.isdigit():
        print("--meter-id must be a digit string", file=sys.stderr)
        return 2
    clock = SystemClock()
    try:
        signer = OcmfSigner.load_or_create(args.signing_key)
        pair = load_or_create_certificate(f"DCBM {args.meter_id}", args.cert_out, args.key_out)
    except (OSError, ValueError) as exc:
        print(f"cannot prepare keys: {exc}", file=sys.stderr)
        return 2
    config = MeterConfig(
        meter_id=args.meter_id,
        firmware=args.firmware or DEFAULT_FIRMWARE[args.api],
        api=args.api,
        min_transaction_seconds=args.min_transaction_seconds,
        settings_window_seconds=args.settings_window_seconds,
        time_sync_validity_seconds=args.time_sync_validity_seconds,
        synced=not args.unsynced,
        storage_capacity=args.ring_capacity,
        ocmf_search_window=args.lookup_window,
        ring_filled=args.ring_filled,
        logbook_capacity=args.logbook_capacity,
        logbook_filled=min(args.logbook_filled, args.logbook_capacity),
        sync_expires_in_seconds=args.sync_expires_in_seconds,
        ntp_answer_seconds=args.ntp_answer_seconds,
        tls_on=args.tls,
        ip_address=args.host,
        certificate_pem=meter_pem_form(pair.cert_pem),
    )
    device = SimulatedMeter(clock, signer, config)
    load_source = None
    if args.load_from_mqtt:
        host, _, port = args.load_broker.rpartition(":")
        if not host or not port.isdigit():
            print("--load-broker must be HOST:PORT", file=sys.stderr)
            return 2
        load_source = MqttLoadSource(
            LoadFollower(device), host.strip("[]"), int(port), args.load_from_mqtt
        )
    try:
        server = MeterServer(
            (args.host, args.port),
            device,
            clock,
            server_tls_context(pair),
            idle_timeout_s=args.idle_timeout_seconds,
        )
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="simulator", daemon=True
    )
    serving.start()
    if load_source is not None:
        load_source.start()
    print(f"listening on {server.scheme}://{args.host}:{server.port}", flush=True)
    try:
        while not stop.wait(0.1):
            pass
    finally:
        if load_source is not None:
            load_source.stop()
        server.shutdown()
        server.server_close()
    return 0
