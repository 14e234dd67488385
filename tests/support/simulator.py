"""The simulated meter as a real process on a free port, started and stopped by tests."""

from __future__ import annotations

import http.client
import json
import re
import selectors
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 15.0
_LISTENING = re.compile(r"^listening on (https?)://([^:]+):(\d+)$")


class SimulatorControlError(RuntimeError):
    """A ``/_sim/`` call answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


def pinned_context(cert_path: Path) -> ssl.SSLContext:
    """A client context trusting only ``cert_path``, at security level 1, no hostname check."""
    context = ssl.create_default_context(cafile=str(cert_path))
    context.check_hostname = False
    context.set_ciphers("DEFAULT:@SECLEVEL=1")
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


@dataclass
class Simulator:
    """A running ``python -m lem_dcbm.simulator``; ``stop``/``start`` power it off and on."""

    host: str
    port: int
    tls: bool
    cert_path: Path | None
    process: subprocess.Popen[str] | None
    args: list[str] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT``."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls:
            if self.cert_path is None:
                raise RuntimeError("a TLS simulator needs cert_path")
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=10, context=pinned_context(self.cert_path)
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
        return json.loads(text)

    def state(self) -> dict[str, Any]:
        """``GET /_sim/state``."""
        answer: dict[str, Any] = self.control("GET", "/_sim/state")
        return answer

    def set_faults(self, **faults: Any) -> None:
        """``PUT /_sim/faults`` with the given fault fields."""
        self.control("PUT", "/_sim/faults", faults)

    def clear_faults(self) -> None:
        """``DELETE /_sim/faults``."""
        self.control("DELETE", "/_sim/faults")

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

    def stop(self) -> None:
        """Terminate the process (the meter loses power)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stdout:
            process.stdout.close()

    def start(self) -> None:
        """(Re)start on the same port with the same arguments, keys and certificate."""
        if self.process is not None:
            raise RuntimeError("the simulator is already running")
        command = [
            sys.executable,
            "-m",
            "lem_dcbm.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]
        log = open(self.log_path or "/dev/null", "a")  # noqa: SIM115 - owned by the process
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
            )
        finally:
            log.close()
        line = self._first_line(self.process)
        match = _LISTENING.match(line.strip())
        if not match:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}; {self._log_tail()}")
        self.tls = match.group(1) == "https"
        self.port = int(match.group(3))

    def _first_line(self, process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    return process.stdout.readline()
                if process.poll() is not None:
                    break
        self.stop()
        raise RuntimeError(f"simulator did not print its address; {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return "log: " + self.log_path.read_text()[-2000:]
        return "no log"


def start_simulator(
    workdir: Path,
    *,
    tls: bool = False,
    min_transaction_seconds: int = 0,
    api: str = "v2",
    firmware: str | None = None,
    meter_id: str | None = None,
    unsynced: bool = False,
    extra_args: Sequence[str] = (),
) -> Simulator:
    """Start a simulator on a free port; its keys and certificate live in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path = workdir / "meter-cert.pem"
    args = [
        "--min-transaction-seconds",
        str(min_transaction_seconds),
        "--api",
        api,
        "--signing-key",
        str(workdir / "ocmf-key.pem"),
        "--cert-out",
        str(cert_path),
        "--key-out",
        str(workdir / "meter-key.pem"),
    ]
    if tls:
        args.append("--tls")
    if firmware is not None:
        args += ["--firmware", firmware]
    if meter_id is not None:
        args += ["--meter-id", meter_id]
    if unsynced:
        args.append("--unsynced")
    args += list(extra_args)
    sim = Simulator(
        host="127.0.0.1",
        port=0,
        tls=tls,
        cert_path=cert_path,
        process=None,
        args=args,
        log_path=workdir / "simulator.log",
    )
    sim.start()
    return sim


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A plain-HTTP simulator (minimum transaction duration 0) for one test."""
    sim = start_simulator(tmp_path / "simulator")
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def tls_simulator(tmp_path: Path) -> Iterator[Simulator]:
    """An HTTPS simulator (minimum transaction duration 0) for one test."""
    sim = start_simulator(tmp_path / "tls_simulator", tls=True)
    try:
        yield sim
    finally:
        sim.stop()
