"""A simulated LEM DCBM 400/600 meter: the device model, its HTTP(S) server and a CLI."""

from __future__ import annotations

from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner

__all__ = ["MeterConfig", "OcmfSigner", "SimulatedMeter"]
