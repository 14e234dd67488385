"""Waiting on a condition with a deadline instead of a fixed sleep, and free ports."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from lem_dcbm.errors import LemDcbmError

T = TypeVar("T")


class HarnessError(LemDcbmError, RuntimeError):
    """A process of the harness did not start, stop or answer in time; the message says which."""


def wait_until(
    condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns a truthy value; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True when a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_listening(
    host: str,
    port: int,
    process: subprocess.Popen[str] | subprocess.Popen[bytes],
    what: str,
    timeout_s: float,
) -> None:
    """Wait until ``host:port`` accepts connections; fail at once when ``process`` exits."""

    def ready() -> bool:
        if process.poll() is not None:
            raise HarnessError(f"{what} exited with code {process.returncode}")
        return port_open(host, port)

    wait_until(ready, timeout_s, interval=0.05, what=f"{what} to listen on {host}:{port}")
