"""Fixtures shared by every test: real broker, simulator and module processes."""

from __future__ import annotations

from tests.support.broker import mosquitto
from tests.support.simulator import simulator, tls_simulator

__all__ = ["mosquitto", "simulator", "tls_simulator"]
