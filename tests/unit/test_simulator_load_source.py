"""The simulated meter meters the load published for a simulated car."""

from __future__ import annotations

import json
import logging

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.load_source import (
    LoadFollower,
    LoadMessageError,
    LoadReading,
    parse_load,
)
from lem_dcbm.simulator.ocmf_signer import OcmfSigner

#: YetiSimulator's powermeter variable as the 2026 manager publishes it (three phases).
YETI_VAR = {
    "data": {
        "data": {
            "timestamp": "2026-12-05T08:00:00.000Z",
            "meter_id": "YETI_POWERMETER",
            "energy_Wh_import": {"total": 120.0, "L1": 40.0, "L2": 40.0, "L3": 40.0},
            "power_W": {"total": 11040.0, "L1": 3680.0, "L2": 3680.0, "L3": 3680.0},
            "voltage_V": {"L1": 230.0, "L2": 230.0, "L3": 230.0},
            "current_A": {"L1": 16.0, "L2": 16.0, "L3": 16.0, "N": 0.0},
        }
    },
    "msg_type": "Var",
}


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (YETI_VAR, LoadReading(11040.0, 230.0)),
        (YETI_VAR["data"], LoadReading(11040.0, 230.0)),  # the 0.25 framework's envelope
        ({"power_W": 50000, "voltage_V": 400}, LoadReading(50000.0, 400.0)),
        ({"power_W": {"total": 0.0}, "voltage_V": {"DC": 800.0}}, LoadReading(0.0, 800.0)),
        ({"voltage_V": {"DC": 400.0}, "current_A": {"DC": 25.0}}, LoadReading(10000.0, 400.0)),
        (
            {"voltage_V": {"L1": 230.0, "L2": 230.0}, "current_A": {"L1": 10.0, "L2": 6.0}},
            LoadReading(3680.0, 230.0),
        ),
        ({"power_W": 7000, "voltage_V": 0}, LoadReading(7000.0, None)),
    ],
)
def test_parse_load(document: object, expected: LoadReading) -> None:
    assert parse_load(encode(document)) == expected


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"energy_Wh_import": {"total": 1}}', b'{"power_W": "many"}'],
)
def test_messages_without_a_load_are_refused(payload: bytes) -> None:
    with pytest.raises(LoadMessageError):
        parse_load(payload)


def test_the_registers_integrate_the_followed_load_on_the_meter_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    meter = SimulatedMeter(clock, OcmfSigner.generate(), MeterConfig(min_transaction_seconds=0))
    follower = LoadFollower(meter)
    follower.on_message("yeti", encode(YETI_VAR))
    clock.advance(3600.0)
    follower.on_message("yeti", encode({"power_W": 0, "voltage_V": 230}))
    clock.advance(60.0)
    with caplog.at_level(logging.WARNING):
        follower.on_message("yeti", b"garbage")
        follower.on_message("yeti", b"garbage")
    assert follower.applied == 2
    live = meter.livemeasure()
    assert live["energyImportTotal"] == pytest.approx(11.04)
    assert live["power"] == 0.0
    assert live["voltage"] == 230.0
    assert len(caplog.records) == 1  # a repeated bad message is logged once
