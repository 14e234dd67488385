"""A real mosquitto broker on a free port, started and stopped by the tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.waiting import free_port, port_open, wait_until


def mosquitto_binary() -> str:
    """Path of the mosquitto executable (PATH or /usr/sbin)."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise RuntimeError("mosquitto is not installed; run ./scripts/test, which installs it")
    return found


@dataclass
class Broker:
    """A running mosquitto; ``stop``/``start`` let a test cut the broker away."""

    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_inflight_messages 100\n"
            "max_queued_messages 10000\n"
        )
        with open(self.workdir / "mosquitto.log", "ab") as log:
            # The child keeps its own copy of the descriptor.
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(lambda: port_open(self.host, self.port), 10, what="mosquitto to listen")

    def stop(self) -> None:
        """Stop mosquitto."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto for one test, on a free port of 127.0.0.1."""
    broker = Broker("127.0.0.1", free_port(), tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
