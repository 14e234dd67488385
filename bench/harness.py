"""Shared benchmark machinery: broker, simulated meters and modules as real processes.

Each benchmark builds a ``Stack`` (a work directory and every process it started),
records the module's var publications with their receive times on the monotonic
clock (``VarRecorder``), samples ``/proc`` for CPU, memory, threads and descriptors
(``proc_sample``), and writes its figures as JSON and as a printed table.
Nothing here imports from ``tests/``: the benchmarks run on their own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lem_dcbm.config import BrokerSettings
from lem_dcbm.demo import DemoError, free_port, wait_port
from lem_dcbm.everest.envelope import (
    CommandResult,
    EnvelopeError,
    cmd_payload,
    decode,
    parse_result,
)
from lem_dcbm.everest.topics import Topics
from lem_dcbm.meter.tls import pinned_ssl_context

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PREFIX = "everest/"
START_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"^listening on (https?)://([^:]+):(\d+)$")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TRANSACTION_REQUEST: dict[str, Any] = {
    "evse_id": "DE*LEM*E0001",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": ["RFID_PLAIN"],
    "identification_data": "04A2B3C4D5E6F7",
}


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and where the logs are."""


def say(text: str) -> None:
    """One progress line on stderr (stdout carries the tables)."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------


@dataclass
class Broker:
    """A mosquitto process."""

    port: int
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    @property
    def settings(self) -> BrokerSettings:
        """The broker as the project's ``BrokerSettings``."""
        return BrokerSettings(host=self.host, port=self.port)


@dataclass
class Simulator:
    """A ``python -m lem_dcbm.simulator`` process and its control API."""

    name: str
    port: int
    tls: bool
    cert_path: Path
    process: subprocess.Popen[str]
    #: Monotonic time at which it printed ``listening on``: the meter answers from then on.
    listening_at: float = 0.0
    host: str = "127.0.0.1"

    def wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Read the ``listening on`` line; learn the port when it was 0."""
        stdout = self.process.stdout
        assert stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                raise BenchError(f"simulator {self.name} did not start within {timeout_s:.0f} s")
        line = stdout.readline().strip()
        self.listening_at = time.monotonic()
        match = _LISTENING.match(line)
        if not match:
            raise BenchError(f"simulator {self.name} did not start: {line!r}")
        self.port = int(match.group(3))

    def _connection(self) -> http.client.HTTPConnection:
        if not self.tls:
            return http.client.HTTPConnection(self.host, self.port, timeout=10)
        return http.client.HTTPSConnection(
            self.host, self.port, timeout=10, context=self.ssl_context()
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this simulator's certificate."""
        return pinned_ssl_context(self.cert_path.read_text())

    def control(self, method: str, path: str, body: object | None = None) -> Any:
        """Call the simulator's ``/_sim/`` API on a fresh connection; return its JSON."""
        connection = self._connection()
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Connection": "close", "Content-Type": "application/json"}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        if response.status >= 400:
            raise BenchError(f"{method} {path}: HTTP {response.status}: {text[:200]}")
        return json.loads(text or "null")

    def state(self) -> dict[str, Any]:
        """``GET /_sim/state``."""
        answer: dict[str, Any] = self.control("GET", "/_sim/state")
        return answer

    def set_faults(self, **faults: Any) -> None:
        """``PUT /_sim/faults``."""
        self.control("PUT", "/_sim/faults", faults)

    def set_latency(self, latency_ms: int) -> None:
        """Delay every meter request by ``latency_ms`` (0 clears the faults)."""
        if latency_ms:
            self.set_faults(latency_ms=latency_ms)
        else:
            self.control("DELETE", "/_sim/faults")

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT``."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@dataclass
class Module:
    """A ``python -m lem_dcbm run`` process."""

    module_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: Monotonic time just before the process was started.
    started_at: float

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the module's log."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Stack:
    """A work directory and the processes of one benchmark; everything stops on exit."""

    def __init__(self, name: str, *, keep: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"lem-bench-{name}-"))
        self.keep = keep
        self._children: list[subprocess.Popen[Any]] = []
        self.modules: list[Module] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and exc_type is not KeyboardInterrupt:
            exited = [m for m in self.modules if m.process.poll() is not None]
            for module in (exited or self.modules)[:3]:
                say(f"log of module {module.module_id} (last lines):\n{module.log_tail()}")
        self.close()

    def close(self) -> None:
        """Terminate every child, newest first; kill what does not stop within 10 s."""
        for process in reversed(self._children):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in reversed(self._children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
        self._children.clear()
        if self.keep:
            say(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start_broker(self, *, no_delay: bool = False) -> Broker:
        """Start mosquitto on a free port; ``no_delay`` sets ``set_tcp_nodelay true``.

        mosquitto's default (and EVerest's shipped config) leaves Nagle's algorithm on.
        """
        mosquitto = os.environ.get("LEM_MOSQUITTO") or shutil.which("mosquitto")
        if not mosquitto and Path("/usr/sbin/mosquitto").exists():
            mosquitto = "/usr/sbin/mosquitto"
        if not mosquitto:
            raise BenchError("mosquitto not found (scripts/setup installs it)")
        port = free_port()
        conf = self.workdir / f"mosquitto-{port}.conf"
        # Many modules on one broker: no connection or queue limits get in the way.
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 10000"]
        if no_delay:
            lines.append("set_tcp_nodelay true")
        conf.write_text("\n".join(lines) + "\n")
        with open(self.workdir / f"mosquitto-{port}.log", "wb") as log:
            process = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=log, stderr=log)
        self._children.append(process)
        wait_port(port, process, "mosquitto", START_TIMEOUT_S)
        return Broker(port, process)

    def launch_simulator(
        self,
        name: str = "meter",
        *,
        tls: bool = False,
        min_transaction_s: float = 0,
        port: int = 0,
        extra_args: Sequence[str] = (),
    ) -> Simulator:
        """Start a simulator without waiting for it; call ``wait_listening`` next."""
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / "meter-cert.pem"
        argv = [
            sys.executable,
            "-m",
            "lem_dcbm.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--min-transaction-seconds",
            str(min_transaction_s),
            "--signing-key",
            str(directory / "ocmf-key.pem"),
            "--cert-out",
            str(cert_path),
            "--key-out",
            str(directory / "meter-key.pem"),
            *(["--tls"] if tls else []),
            *extra_args,
        ]
        with open(directory / "simulator.log", "wb") as log:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        self._children.append(process)
        return Simulator(name, port, tls, cert_path, process)

    def start_simulator(self, name: str = "meter", **options: Any) -> Simulator:
        """Start a simulator and wait until it answers."""
        sim = self.launch_simulator(name, **options)
        sim.wait_listening()
        return sim

    def start_simulators(self, count: int, **options: Any) -> list[Simulator]:
        """Start ``count`` simulators in parallel and wait for all of them."""
        sims = [self.launch_simulator(f"meter-{i}", **options) for i in range(count)]
        for sim in sims:
            sim.wait_listening()
        return sims

    def module_config(
        self,
        module_id: str,
        meter_port: int,
        *,
        tls_cert: Path | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Path:
        """Write the EVerest config file of one module (defaults except the meter address)."""
        directory = self.workdir / module_id
        directory.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {"ip_address": "127.0.0.1", "port": meter_port}
        if tls_cert is not None:
            values["meter_tls_certificate"] = tls_cert.read_text()
        values.update(overrides or {})
        document = {
            "active_modules": {module_id: {"module": "LemDCBM400600", "config_module": values}}
        }
        path = directory / "config.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def start_module(
        self,
        module_id: str,
        broker: Broker,
        meter_port: int,
        *,
        tls_cert: Path | None = None,
        overrides: dict[str, Any] | None = None,
        wrapper: Sequence[str] = (),
    ) -> Module:
        """Start ``python -m lem_dcbm run`` for one module; ``wrapper`` runs it under a tool."""
        config = self.module_config(module_id, meter_port, tls_cert=tls_cert, overrides=overrides)
        directory = config.parent
        env = {k: v for k, v in os.environ.items() if not k.startswith("EV_")}
        env["LEM_DCBM_HEALTH_FILE"] = str(directory / "health")
        env["LEM_DCBM_STATE_DIR"] = str(directory / "state")
        argv = [
            *wrapper,
            sys.executable,
            "-m",
            "lem_dcbm",
            "run",
            "--config",
            str(config),
            "--broker-host",
            broker.host,
            "--broker-port",
            str(broker.port),
        ]
        log_path = directory / "module.log"
        with open(log_path, "wb") as log:
            started_at = time.monotonic()
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory
            )
        self._children.append(process)
        module = Module(module_id, process, log_path, started_at)
        self.modules.append(module)
        return module

    def stop_module(self, module: Module, timeout_s: float = 10.0) -> int:
        """SIGTERM one module and return its exit code."""
        if module.process.poll() is None:
            module.process.terminate()
        try:
            return module.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            module.process.kill()
            module.process.wait(5)
            raise BenchError(f"module {module.module_id} ignored SIGTERM") from None


# -- var publications ----------------------------------------------------------------------


class _Subscriber:
    """A paho client (TCP_NODELAY) subscribed to one topic filter before it is used."""

    def __init__(self, broker: Broker, topic: str, client_id: str) -> None:
        self._topic = topic
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_socket_open = _no_delay
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            self.close()
            raise BenchError(f"could not subscribe to {topic}")

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self._topic, qos=2)

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raise NotImplementedError


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # As EVerest's own MQTT client does: without it a call that follows the previous
    # answer's PUBCOMP waits for the broker's delayed ACK.
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class VarRecorder(_Subscriber):
    """Records every module's publications of one var with their receive times."""

    def __init__(self, broker: Broker, var: str = "powermeter") -> None:
        self._times: dict[str, list[float]] = {}
        self._last: dict[str, Any] = {}
        self._changed = threading.Condition()
        topic = f"{PREFIX}modules/+/impl/main/var/{var}"
        super().__init__(broker, topic, f"bench-rec-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> VarRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = time.monotonic()
        module_id = message.topic[len(PREFIX) :].split("/")[1]
        try:
            data = decode(bytes(message.payload)).data
        except EnvelopeError:
            return
        with self._changed:
            self._times.setdefault(module_id, []).append(received)
            self._last[module_id] = data.get("data") if isinstance(data, dict) else data
            self._changed.notify_all()

    def times(self, module_id: str) -> list[float]:
        """Receive times of every publication of ``module_id`` so far."""
        with self._changed:
            return list(self._times.get(module_id, ()))

    def last(self, module_id: str) -> Any:
        """The latest value ``module_id`` published."""
        with self._changed:
            return self._last.get(module_id)

    def wait_count(self, module_ids: Iterable[str], count: int, timeout_s: float) -> float:
        """Wait until each module published ``count`` times; return the monotonic time then."""
        wanted = list(module_ids)

        def enough() -> bool:
            return all(len(self._times.get(m, ())) >= count for m in wanted)

        with self._changed:
            if not self._changed.wait_for(enough, timeout_s):
                short = [m for m in wanted if len(self._times.get(m, ())) < count]
                raise BenchError(
                    f"{len(short)} module(s) published fewer than {count} times within "
                    f"{timeout_s:.0f} s: {', '.join(short[:5])}"
                )
        return time.monotonic()


class Caller(_Subscriber):
    """Calls one module's commands the way an EVerest consumer module does (QoS 2)."""

    def __init__(self, broker: Broker, module_id: str) -> None:
        self.topics = Topics(PREFIX, module_id)
        self.origin = f"bench_{uuid.uuid4().hex[:8]}"
        self._inbox: dict[str, queue.SimpleQueue[CommandResult]] = {}
        self._lock = threading.Lock()
        super().__init__(broker, self.topics.cmd_response("+", self.origin), self.origin)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            result = parse_result(bytes(message.payload))
        except EnvelopeError:
            return
        with self._lock:
            inbox = self._inbox.get(result.call_id)
        if inbox is not None:
            inbox.put(result)

    def call(self, command: str, args: dict[str, Any], timeout_s: float = 30) -> CommandResult:
        """Publish one call and wait for its result."""
        call_id = str(uuid.uuid4())
        inbox: queue.SimpleQueue[CommandResult] = queue.SimpleQueue()
        with self._lock:
            self._inbox[call_id] = inbox
        try:
            payload = cmd_payload(call_id, args, self.origin)
            self._client.publish(self.topics.cmd(command), payload, qos=2)
            return inbox.get(timeout=timeout_s)
        except queue.Empty:
            raise BenchError(f"no answer to {command} within {timeout_s:.0f} s") from None
        finally:
            with self._lock:
                self._inbox.pop(call_id, None)

    def call_ok(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call ``command``; raise ``BenchError`` unless the module answered status OK."""
        result = self.call(command, args)
        retval = result.retval if isinstance(result.retval, dict) else {}
        if result.error_type or retval.get("status") != "OK":
            raise BenchError(f"{command} failed: {result}")
        return retval


def start_args(transaction_id: str) -> dict[str, Any]:
    """Arguments of ``start_transaction`` for one transaction id."""
    return {"value": {**TRANSACTION_REQUEST, "transaction_id": transaction_id}}


# -- /proc ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One look at a process in ``/proc``."""

    at: float
    cpu_s: float
    rss_kb: int
    hwm_kb: int
    threads: int
    fds: int


def proc_sample(pid: int) -> ProcSample:
    """CPU seconds (user + system), RSS, peak RSS (VmHWM), threads and open descriptors."""
    at = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may contain spaces: utime and stime are 14, 15.
    fields = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return ProcSample(
        at=at,
        cpu_s=cpu_s,
        rss_kb=int(status.get("VmRSS", "0 kB").split()[0]),
        hwm_kb=int(status.get("VmHWM", "0 kB").split()[0]),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def cpu_percent(first: ProcSample, last: ProcSample) -> float:
    """CPU used between two samples, in percent of one core."""
    wall = last.at - first.at
    return 100.0 * (last.cpu_s - first.cpu_s) / wall if wall > 0 else 0.0


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def periods(times: Sequence[float]) -> list[float]:
    """Differences between consecutive receive times."""
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def period_stats(times: Sequence[float], interval_s: float = 1.0) -> dict[str, float]:
    """Count, mean, p1, p50, p99, min, max and the deviations from ``interval_s``."""
    gaps = periods(times)
    deviations = [abs(g - interval_s) for g in gaps]
    return {
        "count": len(times),
        "mean_s": (times[-1] - times[0]) / len(gaps) if gaps else float("nan"),
        "p1_s": percentile(gaps, 1),
        "p50_s": percentile(gaps, 50),
        "p99_s": percentile(gaps, 99),
        "min_s": min(gaps, default=float("nan")),
        "max_s": max(gaps, default=float("nan")),
        "p99_deviation_s": percentile(deviations, 99),
        "worst_deviation_s": max(deviations, default=float("nan")),
    }


def window(times: Sequence[float], start: float, end: float) -> list[float]:
    """The times within ``[start, end)``."""
    return [t for t in times if start <= t < end]


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean and max of durations, in milliseconds."""
    return {
        "count": len(samples_s),
        "p50_ms": 1000 * percentile(samples_s, 50),
        "p99_ms": 1000 * percentile(samples_s, 99),
        "mean_ms": 1000 * sum(samples_s) / len(samples_s) if samples_s else float("nan"),
        "max_ms": 1000 * max(samples_s, default=float("nan")),
    }


# -- output --------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument(
        "--quick", action="store_true", help="short durations: only checks that it runs"
    )
    result.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    result.add_argument("--out", type=Path, help="JSON output (default bench/results/NAME.json)")
    return result


def write_results(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``data`` plus the mode and date as JSON; return the path."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    say(f"results written to {path}")
    return path


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, everything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """A plain-text table with aligned columns."""
    rows_list = [list(row) for row in rows]
    cells = [[fmt(c, digits) for c in row] for row in rows_list]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for raw, row in zip(rows_list, cells, strict=True):
        # Text left, numbers right.
        lines.append(
            "  ".join(
                c.rjust(w) if isinstance(v, (int, float)) else c.ljust(w)
                for v, c, w in zip(raw, row, widths, strict=True)
            )
        )
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a titled table on stdout."""
    print(f"\n{title}\n{table(headers, list(rows))}", flush=True)


def run_main(body: Any, args: argparse.Namespace) -> int:
    """Run ``body(args)``; on ``BenchError`` print the error and return 1."""
    try:
        body(args)
    except (BenchError, DemoError) as err:
        say(f"FAILED: {err}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    return 0
