"""When the meter's clock is written: init, after the settings window, daily, before a start."""

from __future__ import annotations

from datetime import datetime, timezone

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.timesync import NtpServer, TimeSync
from lem_dcbm.everest.shapes import transaction_request
from tests.support.fake_meter import FakeMeter

DST = {"activated": False, "offset": 60}


def setup(ntp: tuple[NtpServer, ...] = ()) -> tuple[TimeSync, FakeMeter, ManualClock]:
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    meter = FakeMeter()
    sync = TimeSync(meter, clock, timezone="+01:00", dst=DST, ntp_servers=ntp)
    return sync, meter, clock


def kinds(meter: FakeMeter) -> list[str]:
    out = []
    for write in meter.settings_writes:
        key = next(iter(write))
        out.append(f"{key}.{next(iter(write[key]))}" if key == "time" else key)
    return out


def test_manual_sync_schedule() -> None:
    sync, meter, clock = setup()
    sync.sync()  # init, inside the settings window
    assert kinds(meter) == ["time.utc", "time.tz", "time.dst"]
    assert meter.settings_writes[0] == {"time": {"utc": "2026-11-22T10:00:00Z"}}
    assert meter.settings_writes[1] == {"time": {"tz": "+01:00"}}
    assert meter.settings_writes[2] == {"time": {"dst": DST}}
    clock.advance(119)
    assert not sync.sync_if_due()
    clock.advance(1)
    assert sync.sync_if_due()  # the window has passed: write again so it persists
    assert len(meter.settings_writes) == 6
    clock.advance(24 * 3600 - 1)
    assert not sync.sync_if_due()
    clock.advance(1)
    assert sync.sync_if_due()
    # Timezone and DST rules persisted after the window are not written again: each write
    # is an entry of the meter's logbook, which never empties.
    assert meter.settings_writes[-1] == {"time": {"utc": "2026-11-23T10:02:00Z"}}
    assert len(meter.settings_writes) == 7


def test_failed_sync_retried_after_a_minute() -> None:
    sync, meter, clock = setup()
    clock.advance(200)
    meter.refuse_settings.add("time.utc")
    assert not sync.sync_if_due()
    clock.advance(59)
    assert not sync.sync_if_due()
    meter.refuse_settings.clear()
    clock.advance(1)
    assert sync.sync_if_due()


def test_ntp_written_until_after_window_then_never_again() -> None:
    servers = (NtpServer("192.0.2.1", 123), NtpServer("192.0.2.2", 1123))
    sync, meter, clock = setup(servers)
    sync.sync()
    assert meter.settings_writes[0] == {
        "ntp": {
            "servers": [
                {"ipAddress": "192.0.2.1", "port": 123},
                {"ipAddress": "192.0.2.2", "port": 1123},
            ],
            "syncPeriod": 120,
            "ntpActivated": True,
        }
    }
    assert kinds(meter) == ["ntp", "time.tz", "time.dst"]
    clock.advance(120)
    assert sync.sync_if_due()
    assert sync.next_due is None
    clock.advance(3 * 24 * 3600)
    assert not sync.sync_if_due()
    sync.sync()  # before a start: nothing to do any more
    assert len(meter.settings_writes) == 6


def test_controller_walks_init_window_daily_and_start_syncs() -> None:
    from lem_dcbm.core.controller import ControllerSettings, MeterController
    from lem_dcbm.core.transaction_request import StartSettings

    sync, meter, clock = setup()
    controller = MeterController(
        meter, ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)), clock, sync
    )

    def utc_writes() -> list[str]:
        return [w["time"]["utc"] for w in meter.settings_writes if "utc" in w.get("time", {})]

    controller.initialize()  # init sync, inside the settings window
    assert kinds(meter) == ["time.utc", "time.tz", "time.dst"]
    clock.advance(119)
    controller.housekeeping()
    assert len(meter.settings_writes) == 3
    clock.advance(1)
    controller.housekeeping()  # the window has passed
    assert utc_writes() == ["2026-11-22T10:00:00Z", "2026-11-22T10:02:00Z"]
    clock.advance(24 * 3600)
    controller.housekeeping()  # daily
    assert utc_writes()[-1] == "2026-11-23T10:02:00Z"
    clock.advance(600)
    assert controller.start_transaction(
        transaction_request({"evse_id": "E1", "transaction_id": "t1"})
    ).ok
    assert len(meter.settings_writes) == 7  # synced 10 minutes ago: valid for 47 h more
    assert controller.stop_transaction("t1").ok
    clock.advance(3600)
    answer = controller.start_transaction(
        transaction_request({"evse_id": "E1", "transaction_id": "t2"})
    )
    assert answer.ok
    assert utc_writes()[-1] == "2026-11-23T11:12:00Z"  # right before the start
    assert kinds(meter)[-1] == "time.utc"
    assert len(meter.settings_writes) == 8


def test_due_sync_spreads_its_writes_to_keep_a_deadline() -> None:
    sync, meter, clock = setup()
    clock.advance(200)
    slow: list[int] = []

    def slow_write() -> None:
        slow.append(1)
        clock.advance(0.3)  # a meter that takes 300 ms per answer

    meter.fail["put_settings"] = [slow_write] * 10
    start = clock.monotonic()
    # The next publication is 0.8 s away: room for two 0.3 s writes, not three.
    assert not sync.sync_if_due(deadline=start + 0.8)
    assert kinds(meter) == ["time.utc", "time.tz"]
    clock.advance(1.0 - 0.6)
    assert sync.sync_if_due(deadline=start + 1.8)
    assert kinds(meter) == ["time.utc", "time.tz", "time.dst"]
    assert sync.next_due == start + 24 * 3600.0


def test_sync_before_start_does_all_writes_even_with_a_partial_sync_pending() -> None:
    sync, meter, clock = setup()
    clock.advance(200)
    meter.fail["put_settings"] = [lambda: clock.advance(0.6)] * 10
    assert not sync.sync_if_due(deadline=clock.monotonic() + 1.0)
    assert len(meter.settings_writes) == 1
    sync.sync()
    assert kinds(meter)[1:] == ["time.utc", "time.tz", "time.dst"]
