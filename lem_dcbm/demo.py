"""The end-to-end demo: broker, simulated meter and module, driven as EVerest would.

Starts an MQTT broker (mosquitto, or the pure-Python amqtt when mosquitto is missing),
the meter simulator and the module as separate processes, shows live measurements,
runs one transaction under load, prints the signed OCMF record and checks its
signature. Everything it started is stopped at the end or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lem_dcbm.config import BrokerSettings
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from lem_dcbm.tools import table
from lem_dcbm.tools.consumer import EverestConsumer

MODULE_ID = "powermeter_1"
MIN_TRANSACTION_S = 5


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which."""


def say(text: str) -> None:
    """One line of demo narration."""
    print(f"demo: {text}", flush=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{what} exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise DemoError(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


class Processes:
    """Child processes with their logs; all are stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr to ``<workdir>/<name>.log``."""
        with open(self.workdir / f"{name}.log", "wb") as log:
            # The child keeps its own copy of the descriptor.
            process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT)
        self.children.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a child's log."""
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        """Terminate every child, newest first; kill what does not stop in 5 s."""
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.children):
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def start_broker(procs: Processes, port: int) -> str:
    """Start mosquitto (or amqtt) on ``port``; return which one."""
    mosquitto = os.environ.get("LEM_MOSQUITTO") or shutil.which("mosquitto")
    if not mosquitto and Path("/usr/sbin/mosquitto").exists():
        mosquitto = "/usr/sbin/mosquitto"
    if mosquitto and os.environ.get("LEM_DEMO_BROKER") != "embedded":
        conf = procs.workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        process = procs.start("broker", [mosquitto, "-c", str(conf)])
        name = "mosquitto"
    else:
        amqtt = shutil.which("amqtt") or str(Path(sys.executable).parent / "amqtt")
        if not Path(amqtt).exists():
            raise DemoError("no mosquitto and no amqtt: install one (scripts/demo does)")
        conf = procs.workdir / "amqtt.yaml"
        conf.write_text(
            yaml.safe_dump(
                {
                    "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                    "auth": {"allow-anonymous": True},
                    "topic-check": {"enabled": False},
                }
            )
        )
        process = procs.start("broker", [amqtt, "-c", str(conf)])
        name = "amqtt (embedded pure-Python broker)"
    wait_port(port, process, "the MQTT broker", 15)
    return name


def start_simulator(procs: Processes) -> int:
    """Start the simulator on a free port with a short minimum transaction time."""
    port = free_port()
    process = procs.start(
        "simulator",
        [
            sys.executable,
            "-m",
            "lem_dcbm.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--min-transaction-seconds",
            str(MIN_TRANSACTION_S),
        ],
    )
    wait_port(port, process, "the meter simulator", 15)
    return port


def sim_control(port: int, method: str, path: str, body: Any) -> Any:
    """Call the simulator's control API."""
    request = urllib.request.Request(  # noqa: S310 - a fixed http URL on loopback
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        return json.loads(answer.read() or b"null")


def write_config(workdir: Path, meter_port: int) -> Path:
    """The module's config: the simulator config example with the real port."""
    config = {
        "active_modules": {
            MODULE_ID: {
                "module": "LemDCBM400600",
                "config_module": {
                    "ip_address": "127.0.0.1",
                    "port": meter_port,
                    "resilience_initial_connection_retries": 5,
                    "resilience_initial_connection_retry_delay": 1000,
                    "command_timeout_ms": 2000,
                    "journal_dir": str(workdir / "journal"),
                },
            }
        }
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Watcher:
    """Collects powermeter values and the public key from the module."""

    def __init__(self, consumer: EverestConsumer) -> None:
        self.values: list[Any] = []
        self.public_key = ""
        self.changed = threading.Condition()
        consumer.on_var("powermeter", self._powermeter)
        consumer.on_var("public_key_ocmf", self._key)

    def _powermeter(self, value: Any) -> None:
        with self.changed:
            self.values.append(value)
            self.changed.notify_all()

    def _key(self, value: Any) -> None:
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


def run_demo(workdir: Path) -> bool:
    """Run every step; True when the OCMF record's signature verifies."""
    procs = Processes(workdir)
    try:
        broker_port = free_port()
        say(f"starting {start_broker(procs, broker_port)} on 127.0.0.1:{broker_port}")
        meter_port = start_simulator(procs)
        say(f"meter simulator on http://127.0.0.1:{meter_port}")
        sim_control(meter_port, "PUT", "/_sim/load", {"power_kw": 150.0, "voltage_v": 800.0})
        config = write_config(workdir, meter_port)
        module = procs.start(
            "module",
            [
                sys.executable,
                "-m",
                "lem_dcbm",
                "run",
                "--config",
                str(config),
                "--broker-host",
                "127.0.0.1",
                "--broker-port",
                str(broker_port),
            ],
        )
        say(f"module {MODULE_ID} started (pid {module.pid})")
        consumer = EverestConsumer(BrokerSettings(host="127.0.0.1", port=broker_port), MODULE_ID)
        consumer.connect()
        try:
            return drive(consumer)
        finally:
            consumer.close()
    except DemoError as err:
        say(f"FAILED: {err}")
        say("module log (last lines):\n" + procs.log_tail("module"))
        return False
    finally:
        procs.stop_all()


def drive(consumer: EverestConsumer) -> bool:
    """Play EvseManager: boot-time stop, live values, one transaction, check the record."""
    watcher = Watcher(consumer)
    print(table.header(), flush=True)
    watcher.show_rows(3, 20)
    answer = consumer.call("stop_transaction", {"transaction_id": ""}, 15)
    say(f"boot-time stop_transaction(''): {json.dumps(answer.retval)}")
    transaction_id = str(uuid.uuid4())
    request = {
        "evse_id": "DE*LEM*E0001",
        "transaction_id": transaction_id,
        "identification_status": "ASSIGNED",
        "identification_type": "ISO14443",
        "identification_flags": ["RFID_PLAIN"],
        "identification_data": "04A2B3C4D5E6F7",
    }
    started = consumer.call("start_transaction", {"value": request}, 15)
    if not isinstance(started.retval, dict) or started.retval.get("status") != "OK":
        raise DemoError(f"start_transaction failed: {started}")
    say(f"transaction {transaction_id} started: {json.dumps(started.retval)[:160]}...")
    print(table.header(), flush=True)
    watcher.show_rows(MIN_TRANSACTION_S + 1, 30)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit 0 when the transaction's record verifies."""
    parser = argparse.ArgumentParser(prog="lem-dcbm-demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="lem-dcbm-demo-"))
    try:
        ok = run_demo(workdir)
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
