"""Fixtures shared by every test: a real broker and simulator per test, from the harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator, start_simulator


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto for one test, on a free port of 127.0.0.1."""
    with Broker(tmp_path) as broker:
        yield broker


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A plain-HTTP simulator (minimum transaction duration 0) for one test."""
    with start_simulator(tmp_path / "simulator") as sim:
        yield sim


@pytest.fixture
def tls_simulator(tmp_path: Path) -> Iterator[Simulator]:
    """An HTTPS simulator (minimum transaction duration 0) for one test."""
    with start_simulator(tmp_path / "tls_simulator", tls=True) as sim:
        yield sim
