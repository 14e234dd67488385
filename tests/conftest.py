"""Fixtures shared by every test: real broker, simulator and module processes."""

from __future__ import annotations

from tests.support.broker import mosquitto

__all__ = ["mosquitto"]
