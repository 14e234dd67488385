"""The end-to-end demo: broker, simulated meter and module, driven as EVerest would.

Starts an MQTT broker (mosquitto, or the pure-Python amqtt when mosquitto is missing),
the meter simulator and the module as separate processes, shows live measurements,
runs one transaction under load, prints the signed OCMF record and checks its
signature. Everything it started is stopped at the end or on Ctrl-C. With
``--everest-api`` the module serves EVerest's powermeter API and the demo plays the
``powermeter_API`` bridge instead (heartbeat included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lem_dcbm.errors import LemDcbmError
from lem_dcbm.harness import (
    MODULE_ID,
    HarnessError,
    ProcessGroup,
    find_mosquitto,
    simulator_config,
    transaction_request,
    write_config,
)
from lem_dcbm.harness.broker import BrokerKind
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from lem_dcbm.tools import table
from lem_dcbm.tools.api_client import ApiClient
from lem_dcbm.tools.cli import Consumer
from lem_dcbm.tools.consumer import EverestConsumer

MIN_TRANSACTION_S = 5
#: A shorter simulated minimum transaction duration in whole seconds (the test suite's).
MIN_TRANSACTION_ENV = "LEM_DEMO_MIN_TRANSACTION_S"
#: ``embedded`` makes the demo use amqtt even where mosquitto is installed.
BROKER_ENV = "LEM_DEMO_BROKER"


class DemoError(LemDcbmError, RuntimeError):
    """A step of the demo failed; the message says which."""


def say(text: str) -> None:
    """One line of demo narration."""
    print(f"demo: {text}", flush=True)


def min_transaction_s() -> int:
    """The simulated meter's minimum transaction duration: ``MIN_TRANSACTION_S`` or the env's."""
    return int(os.environ.get(MIN_TRANSACTION_ENV, MIN_TRANSACTION_S))


def broker_kind() -> BrokerKind:
    """mosquitto when it is installed, else the pure-Python amqtt."""
    if find_mosquitto() and os.environ.get(BROKER_ENV) != "embedded":
        return "mosquitto"
    return "amqtt"


class Watcher:
    """Collects powermeter values and the public key from the module."""

    def __init__(self, consumer: Consumer) -> None:
        self.values: list[Any] = []
        self.public_key = ""
        self.changed = threading.Condition()
        consumer.on_var("powermeter", self._powermeter)
        consumer.on_var("public_key_ocmf", self._key)

    def _powermeter(self, value: object) -> None:
        with self.changed:
            self.values.append(value)
            self.changed.notify_all()

    def _key(self, value: object) -> None:
        with self.changed:
            self.public_key = str(value)
            self.changed.notify_all()

    def show_rows(self, count: int, timeout_s: float) -> None:
        """Print the next ``count`` publications as table rows."""
        with self.changed:
            start = len(self.values)
            ok = self.changed.wait_for(lambda: len(self.values) >= start + count, timeout_s)
            rows = self.values[start : start + count]
        for value in rows:
            print(table.row(value), flush=True)
        if not ok:
            raise DemoError(f"fewer than {count} measurements within {timeout_s:.0f} s")


def run_demo(workdir: Path, *, everest_api: bool = False) -> bool:
    """Run every step; True when the OCMF record's signature verifies."""
    with ProcessGroup(workdir) as group:
        try:
            broker = group.broker(kind=broker_kind())
            say(f"started {broker.description} on {broker.host}:{broker.port}")
            sim = group.simulator(min_transaction_seconds=min_transaction_s())
            say(f"meter simulator on {sim.base_url}")
            sim.set_load(power_kw=150.0, voltage_v=800.0)
            values = simulator_config(sim, resilience_initial_connection_retries=5)
            config = write_config(workdir / "config.yaml", values)
            extra = ["--everest-api"] if everest_api else []
            module = group.module("module", config, broker, log_level=None, extra_args=extra)
            mode = "EVerest's powermeter API" if everest_api else "the EVerest module protocol"
            say(f"module {MODULE_ID} started (pid {module.pid}), serving {mode}")
            module.wait_ready()
            consumer: Consumer
            if everest_api:
                consumer = ApiClient(broker.settings, MODULE_ID)
                consumer.connect()
                consumer.start_heartbeat()
            else:
                consumer = EverestConsumer(broker.settings, MODULE_ID)
                consumer.connect()
            try:
                return drive(consumer)
            finally:
                consumer.close()
        except (DemoError, HarnessError, LemDcbmError) as err:
            say(f"FAILED: {err}")
            for module in group.modules:
                say("module log (last lines):\n" + module.log_tail(15))
            return False


#: What the module answers a stop("") when the meter runs no transaction.
NOTHING_RUNNING = "no transaction running"


def boot_stop_summary(retval: object) -> str:
    """One line on the answer to EvseManager's boot-time ``stop_transaction("")``.

    After a boot nothing runs, so UNEXPECTED_ERROR "no transaction running" is the
    expected answer, not a failure.
    """
    raw = json.dumps(retval)
    if isinstance(retval, dict) and retval.get("error") == NOTHING_RUNNING:
        return (
            "boot-time stop_transaction(''), as EvseManager sends at every start: nothing "
            f"was running, the expected answer after a boot ({raw})"
        )
    if isinstance(retval, dict) and retval.get("status") == "OK":
        return f"boot-time stop_transaction(''): a transaction left running was stopped ({raw})"
    return f"boot-time stop_transaction(''): unexpected answer {raw}"


def drive(consumer: Consumer) -> bool:
    """Play EvseManager: boot-time stop, live values, one transaction, check the record."""
    watcher = Watcher(consumer)
    print(table.header(), flush=True)
    watcher.show_rows(3, 20)
    answer = consumer.call("stop_transaction", {"transaction_id": ""}, 15)
    say(boot_stop_summary(answer.retval))
    transaction_id = str(uuid.uuid4())
    request = transaction_request(transaction_id)
    started = consumer.call("start_transaction", {"value": request}, 15)
    if not isinstance(started.retval, dict) or started.retval.get("status") != "OK":
        raise DemoError(f"start_transaction failed: {started}")
    say(f"transaction {transaction_id} started: {json.dumps(started.retval)[:160]}...")
    print(table.header(), flush=True)
    watcher.show_rows(min_transaction_s() + 1, 30)
    stopped = consumer.call("stop_transaction", {"transaction_id": transaction_id}, 15)
    retval = stopped.retval if isinstance(stopped.retval, dict) else {}
    if retval.get("status") != "OK":
        raise DemoError(f"stop_transaction failed: {stopped}")
    record = retval["signed_meter_value"]["signed_meter_data"]
    key = retval["signed_meter_value"].get("public_key") or watcher.public_key
    say("signed OCMF record:")
    print(record, flush=True)
    readings = parse_ocmf(record).payload.get("RD", [])
    energy = [r.get("RV") for r in readings if r.get("RI") == "1-0:1.8.0"]
    if len(energy) >= 2:
        say(f"energy in this transaction: {energy[-1] - energy[0]:.3f} kWh")
    verified = verify_ocmf(record, key)
    say(f"signature verifies with public_key_ocmf: {'yes' if verified else 'NO'}")
    return verified


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C, so every ``finally`` and ``with`` cleans up."""


def _terminated(_signum: int, _frame: object) -> None:
    # Once is enough: a second SIGTERM during the clean-up must not cut it short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit 0 when the transaction's record verifies."""
    parser = argparse.ArgumentParser(prog="lem-dcbm-demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--everest-api",
        action="store_true",
        help="run the module in API mode and play EVerest's powermeter_API bridge",
    )
    args = parser.parse_args(argv)
    # SIGTERM (timeout, a CI runner, systemd) stops the demo as Ctrl-C does: its processes
    # and its folder go, instead of the Python exiting with them left behind.
    signal.signal(signal.SIGTERM, _terminated)
    workdir = Path(tempfile.mkdtemp(prefix="lem-dcbm-demo-"))
    try:
        ok = run_demo(workdir, everest_api=args.everest_api)
    except Terminated:
        say("terminated (SIGTERM); everything started was stopped")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        if args.keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say("done" if ok else "failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
