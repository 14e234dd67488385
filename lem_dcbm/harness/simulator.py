"""The meter simulator as a real process on a free port, and its control API."""

from __future__ import annotations

import http.client
import json
import re
import selectors
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lem_dcbm.harness.processes import log_tail, spawn, stop_processes
from lem_dcbm.harness.waiting import HarnessError
from lem_dcbm.json_types import JsonObject
from lem_dcbm.meter.tls import pinned_ssl_context

START_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"^listening on (https?)://([^:]+):(\d+)$")


class SimulatorControlError(HarnessError):
    """A ``/_sim/`` call answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


def pinned_context(cert_path: Path) -> ssl.SSLContext:
    """The package's pinned client context for the certificate in ``cert_path``."""
    return pinned_ssl_context(cert_path.read_text())


@dataclass
class Simulator:
    """A ``python -m lem_dcbm.simulator``; ``stop``/``start`` power the meter off and on.

    Its keys, certificate and log live in ``workdir``, so a restart keeps its identity.
    """

    workdir: Path
    port: int = 0
    tls: bool = False
    host: str = "127.0.0.1"
    #: Command-line options after ``--host`` and ``--port``.
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = field(default=None, init=False)
    #: Monotonic time at which it printed ``listening on``: the meter answers from then on.
    listening_at: float = field(default=0.0, init=False)

    @property
    def name(self) -> str:
        """The work directory's name, for messages."""
        return self.workdir.name

    @property
    def cert_path(self) -> Path:
        """The meter's TLS certificate (written at the first start)."""
        return self.workdir / "meter-cert.pem"

    @property
    def log_path(self) -> Path:
        """The simulator's log."""
        return self.workdir / "simulator.log"

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT``."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this simulator's certificate."""
        return pinned_context(self.cert_path)

    # --- process ------------------------------------------------------------------

    def launch(self) -> Simulator:
        """Start the process without waiting for it; ``wait_listening`` comes next."""
        if self.process is not None:
            raise HarnessError(f"simulator {self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "lem_dcbm.simulator", "--host", self.host]
        argv += ["--port", str(self.port), *self.args]
        self.process = spawn(argv, self.log_path, pipe_stdout=True, text=True, bufsize=1)
        return self

    def wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> Simulator:
        """Read the ``listening on`` line; learn the port when it was 0."""
        line = self._first_line(timeout_s)
        match = _LISTENING.match(line.strip())
        if not match:
            self.stop()
            raise HarnessError(f"simulator {self.name} did not start: {line!r}; {self._log()}")
        self.listening_at = time.monotonic()
        self.tls = match.group(1) == "https"
        self.port = int(match.group(3))
        return self

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Simulator:
        """(Re)start on the same port with the same options, keys and certificate."""
        return self.launch().wait_listening(timeout_s)

    def stop(self) -> None:
        """Terminate the process (the meter loses power)."""
        process, self.process = self.process, None
        if process is not None:
            stop_processes([process], 5)

    def __enter__(self) -> Simulator:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _first_line(self, timeout_s: float) -> str:
        process = self.process
        if process is None or process.stdout is None:
            raise HarnessError(f"simulator {self.name} was not launched")
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    return process.stdout.readline()
                if process.poll() is not None:
                    break
        self.stop()
        raise HarnessError(
            f"simulator {self.name} did not print its address within {timeout_s:g} s; {self._log()}"
        )

    def _log(self) -> str:
        return "log:\n" + log_tail(self.log_path)

    # --- control API --------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=10, context=self.ssl_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def control(self, method: str, path: str, body: object | None = None) -> Any:
        """Call the control API (``/_sim/...``) on a fresh connection; return its JSON."""
        connection = self._connection()
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Connection": "close"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8")
        finally:
            connection.close()
        if response.status >= 400:
            raise SimulatorControlError(method, path, response.status, text)
        return json.loads(text or "null")

    def state(self) -> JsonObject:
        """``GET /_sim/state``."""
        answer: dict[str, Any] = self.control("GET", "/_sim/state")
        return answer

    def set_faults(self, **faults: object) -> None:
        """``PUT /_sim/faults`` with the given fault fields."""
        self.control("PUT", "/_sim/faults", faults)

    def clear_faults(self) -> None:
        """``DELETE /_sim/faults``."""
        self.control("DELETE", "/_sim/faults")

    def set_latency(self, latency_ms: int) -> None:
        """Delay every meter request by ``latency_ms`` (0 clears every fault)."""
        if latency_ms:
            self.set_faults(latency_ms=latency_ms)
        else:
            self.clear_faults()

    def reboot(self) -> None:
        """``POST /_sim/reboot``; follows a TLS switch that takes effect at the reboot."""
        answer = self.control("POST", "/_sim/reboot")
        self.tls = bool(answer["tls"])

    def set_load(self, **load: float) -> None:
        """``PUT /_sim/load`` with any of power_kw, voltage_v, temperature_c."""
        self.control("PUT", "/_sim/load", load)

    def set_bits(
        self, status: dict[str, bool] | None = None, errors: dict[str, bool] | None = None
    ) -> None:
        """``PUT /_sim/bits``: force status/error bits (None as a value releases a bit)."""
        self.control("PUT", "/_sim/bits", {"status": status or {}, "errors": errors or {}})

    def drop_connections(self) -> int:
        """``POST /_sim/drop_connections``; the number of idle connections closed."""
        return int(self.control("POST", "/_sim/drop_connections")["dropped"])


def simulator_args(
    workdir: Path,
    *,
    tls: bool = False,
    min_transaction_seconds: float = 0,
    api: str = "v2",
    firmware: str | None = None,
    meter_id: str | None = None,
    unsynced: bool = False,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The simulator's options; its keys and certificate go to ``workdir``."""
    args = ["--min-transaction-seconds", f"{min_transaction_seconds:g}", "--api", api]
    args += ["--signing-key", str(workdir / "ocmf-key.pem")]
    args += ["--cert-out", str(workdir / "meter-cert.pem")]
    args += ["--key-out", str(workdir / "meter-key.pem")]
    if tls:
        args.append("--tls")
    if firmware is not None:
        args += ["--firmware", firmware]
    if meter_id is not None:
        args += ["--meter-id", meter_id]
    if unsynced:
        args.append("--unsynced")
    return args + list(extra_args)


def start_simulator(
    workdir: Path, *, port: int = 0, wait: bool = True, **options: Any
) -> Simulator:
    """Start a simulator (on a free port unless ``port``); ``options`` as for ``simulator_args``.

    With ``wait`` False it only launches; call ``wait_listening`` before using it.
    """
    sim = Simulator(workdir, port=port, tls=bool(options.get("tls")))
    sim.args = simulator_args(workdir, **options)
    return sim.start() if wait else sim.launch()
