"""lem-dcbm: an EVerest powermeter module for the LEM DCBM 400/600 DC energy meter."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
