"""Signed OCMF records for the record tests: the real LEM record and simulator-built ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lem_dcbm.simulator.ocmf_signer import CableCompensation, OcmfContent, OcmfReading

#: A real LEM DCBM record with its publicKeyOcmf (see the file's "source").
REAL_RECORD_FILE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "ocmf" / "lem-real-record.json"
)

#: A complete transaction as the simulator's signer writes it.
CONTENT = OcmfContent(
    meter_id="12024072805",
    firmware="MU-2.3.0.1",
    pagination=7,
    identification_type=3,
    identification="04A1B2C3D4",
    tariff_text="0,39 EUR/kWh",
    evse_id="DE*LEM*E0001",
    cable=CableCompensation("Comp_2", 2, 40),
    begin=OcmfReading("2026-03-01T10:00:00,000+0100 R", 100.0, 2.5),
    end=OcmfReading("2026-03-01T10:30:00,000+0100 R", 142.125, 2.5),
)


def real_record() -> dict[str, Any]:
    """The real record's file: ``ocmf``, ``public_key_ocmf_hex``, ``public_key_ocmf_base64``."""
    data: dict[str, Any] = json.loads(REAL_RECORD_FILE.read_text())
    return data
