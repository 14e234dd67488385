"""Temperature levels: minimum time, one raise and one clear per level, hysteresis, clamping."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.powermeter import powermeter_value
from lem_dcbm.core.temperature_monitor import TemperatureLimits, TemperatureMonitor
from lem_dcbm.meter.models import LiveMeasure
from tests.support.fake_outputs import RecordingOutputs

LIMITS = TemperatureLimits(warning_level_c=60.0, error_level_c=70.0, hysteresis_k=3.0, min_time_s=5)
WARNING = ("VendorWarning", "TemperatureWarning")
ERROR = ("VendorError", "TemperatureError")


def monitor(
    limits: TemperatureLimits = LIMITS,
) -> tuple[TemperatureMonitor, RecordingOutputs, ManualClock]:
    clock = ManualClock()
    outputs = RecordingOutputs()
    return TemperatureMonitor(limits, outputs, clock), outputs, clock


def feed(
    mon: TemperatureMonitor, clock: ManualClock, temps: list[float], step_s: float = 1.0
) -> None:
    """One reading per second, both sensors at the same temperature."""
    for temp in temps:
        mon.update([temp, temp - 2.0])
        clock.advance(step_s)


def test_ramp_up_and_down_raises_and_clears_each_level_once() -> None:
    mon, outputs, clock = monitor()
    ramp = [float(t) for t in range(40, 81)] + [80.0] * 6 + [float(t) for t in range(80, 39, -1)]
    feed(mon, clock, ramp)
    assert outputs.events == [
        ("raise", WARNING),
        ("raise", ERROR),
        ("clear", ERROR),
        ("clear", WARNING),
    ]


def test_raise_waits_for_the_minimum_time() -> None:
    mon, outputs, clock = monitor()
    feed(mon, clock, [61.0] * 5)  # readings at 0..4 s: not yet 5 s above the level
    assert outputs.events == []
    feed(mon, clock, [61.0])  # reading at 5 s
    assert outputs.events == [("raise", WARNING)]
    feed(mon, clock, [61.0] * 20)
    assert outputs.events == [("raise", WARNING)]


def test_short_spikes_raise_nothing() -> None:
    mon, outputs, clock = monitor()
    # Spikes of 4 s above both levels, separated by one reading below: the timer restarts.
    feed(mon, clock, ([90.0] * 4 + [50.0]) * 5)
    assert outputs.events == []


def test_hysteresis_keeps_the_level_until_far_enough_below() -> None:
    mon, outputs, clock = monitor()
    feed(mon, clock, [65.0] * 6)
    assert outputs.events == [("raise", WARNING)]
    feed(mon, clock, [59.0, 57.5, 57.0, 65.0, 57.0] * 3)  # 57.0 is not below 60 - 3
    assert outputs.events == [("raise", WARNING)]
    feed(mon, clock, [56.9])
    assert outputs.events == [("raise", WARNING), ("clear", WARNING)]
    assert not mon.active("TemperatureWarning")


def test_the_hotter_sensor_counts() -> None:
    mon, outputs, clock = monitor()
    for _ in range(6):
        mon.update([30.0, 61.0])
        clock.advance(1)
    assert outputs.events == [("raise", WARNING)]


def test_zero_minimum_time_raises_on_the_first_reading() -> None:
    mon, outputs, clock = monitor(
        TemperatureLimits(warning_level_c=60.0, error_level_c=70.0, min_time_s=0)
    )
    feed(mon, clock, [75.0])
    assert outputs.events == [("raise", WARNING), ("raise", ERROR)]


def test_defaults_never_trigger() -> None:
    mon, outputs, clock = monitor(TemperatureLimits())
    feed(mon, clock, [150.0] * 30)
    assert outputs.events == []


def test_error_level_below_warning_level_is_clamped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        mon, outputs, clock = monitor(
            TemperatureLimits(warning_level_c=60.0, error_level_c=40.0, min_time_s=0)
        )
    assert mon.limits.error_level_c == 60.0
    assert "temperature_error_level_C (40.0 degC) is below" in caplog.text
    feed(mon, clock, [50.0])
    assert outputs.events == []
    feed(mon, clock, [60.0])
    assert outputs.events == [("raise", WARNING), ("raise", ERROR)]


def test_not_a_number_is_ignored() -> None:
    mon, outputs, clock = monitor()
    feed(mon, clock, [65.0] * 3 + [float("nan")] * 2 + [65.0])
    assert outputs.events == [("raise", WARNING)]
    mon.update([])
    assert mon.active("TemperatureWarning")


def test_reads_the_powermeter_publication() -> None:
    mon, outputs, clock = monitor(
        TemperatureLimits(warning_level_c=60.0, error_level_c=70.0, min_time_s=0)
    )
    measure = LiveMeasure(400.0, 1.0, 0.4, 58.0, 62.0, 1.0, 0.0, "2026-11-22T10:00:00+00:00")
    value = powermeter_value(measure, "1", clock.utc_now())
    mon.observe(value)
    assert outputs.events == [("raise", WARNING)]
    unread = float("nan")
    mon.observe(replace(value, temperature_h_c=unread, temperature_l_c=unread))  # no readings
    assert outputs.events == [("raise", WARNING)]  # nothing changes
    assert outputs.events == [("raise", WARNING)]
