"""The meter clock over days, with the simulated meter, the real client and one manual clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner
from tests.support.device_transport import DeviceTransport

START = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
DST = {"activated": False, "offset": 60}
REQUEST: dict[str, Any] = {
    "evse_id": "DE*LEM*E1",
    "transaction_id": "walk-1",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": [],
}


def stack(**meter: Any) -> tuple[MeterController, SimulatedMeter, ManualClock]:
    clock = ManualClock(START)
    device = SimulatedMeter(
        clock, OcmfSigner.generate(), MeterConfig(min_transaction_seconds=0, **meter)
    )
    client = MeterClient(DeviceTransport(device))
    timesync = TimeSync(client, clock, timezone="+01:00", dst=DST)
    controller = MeterController(
        client, ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)), clock, timesync
    )
    return controller, device, clock


def writes(device: SimulatedMeter) -> list[tuple[float, dict[str, Any], bool]]:
    """(seconds since power-on, body, persisted) of every settings write the meter got."""
    return [
        (round(w["since_power_on_s"]), w["body"], w["persisted"])
        for w in device.state()["settings_writes"]
    ]


def utc_body(moment: datetime) -> dict[str, Any]:
    return {"time": {"utc": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}}


def test_init_window_resync_daily_resync_and_sync_before_start() -> None:
    controller, device, clock = stack()
    controller.initialize()
    tz, dst = {"time": {"tz": "+01:00"}}, {"time": {"dst": DST}}
    # Init, inside the meter's 2-minute settings window: accepted, but not persisted.
    assert writes(device) == [(0, utc_body(START), False), (0, tz, False), (0, dst, False)]
    clock.advance(119)
    controller.housekeeping()
    assert len(writes(device)) == 3
    clock.advance(1)
    controller.housekeeping()  # the window has passed: written again, now it persists
    after_window = START + timedelta(seconds=120)
    assert writes(device)[3:] == [
        (120, utc_body(after_window), True),
        (120, tz, True),
        (120, dst, True),
    ]
    clock.advance(24 * 3600 - 1)
    controller.housekeeping()
    assert len(writes(device)) == 6
    clock.advance(1)
    controller.housekeeping()  # daily
    daily = after_window + timedelta(hours=24)
    assert writes(device)[6][1] == utc_body(daily)
    # Only the time from now on: the meter keeps the rules written after the window.
    assert len(writes(device)) == 7
    clock.advance(3600)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    before_start = daily + timedelta(hours=1)
    assert writes(device)[7:] == [
        (round(24 * 3600 + 120 + 3600), utc_body(before_start), True),
    ]
    assert device.state()["running_transaction"] == "walk-1"


def test_meter_clock_a_year_behind_is_fixed_by_the_next_start() -> None:
    controller, device, clock = stack()
    controller.initialize()
    clock.advance(600)
    device.set_clock_offset(-365 * 24 * 3600)
    meter_time = datetime.fromisoformat(device.status()["time"].replace("Z", "+00:00"))
    assert clock.utc_now() - meter_time > timedelta(days=364)
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    meter_time = datetime.fromisoformat(device.status()["time"].replace("Z", "+00:00"))
    assert abs(clock.utc_now() - meter_time) < timedelta(seconds=60)


def test_time_sync_expiry_is_renewed_before_it_blocks_a_start() -> None:
    controller, device, clock = stack()
    controller.initialize()
    for _ in range(3):  # three days of housekeeping keep the 48 h validity alive
        clock.advance(24 * 3600)
        controller.housekeeping()
    assert device.status()["status"]["bits"]["timeSyncStatusIsOk"]
    assert controller.start_transaction(transaction_request(REQUEST)).ok
