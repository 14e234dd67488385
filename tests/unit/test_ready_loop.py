"""The ready loop's schedule and fault reporting, with time under test control."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.ready_loop import LoopTiming, ReadyLoop
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from tests.support.fake_meter import FakeMeter, unreachable
from tests.support.fake_outputs import RecordingOutputs


def new_clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))


def run_loop(
    meter: FakeMeter,
    cycles: int,
    clock: ManualClock | None = None,
    on_meter_answer: Callable[[], None] | None = None,
) -> tuple[RecordingOutputs, list[float], ManualClock]:
    clock = clock or new_clock()
    timesync = TimeSync(meter, clock, timezone="+00:00", dst={})
    controller = MeterController(
        meter, ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)), clock, timesync
    )
    outputs = RecordingOutputs()
    stop = threading.Event()
    stamps: list[float] = []

    def on_cycle() -> None:
        stamps.append(clock.monotonic())
        if len(stamps) >= cycles:
            stop.set()

    loop = ReadyLoop(
        controller, outputs, clock, LoopTiming(), on_cycle=on_cycle, on_meter_answer=on_meter_answer
    )
    loop.run(stop)
    return outputs, stamps, clock


def test_publishes_key_then_one_value_per_second() -> None:
    outputs, stamps, _ = run_loop(FakeMeter(), 5)
    assert outputs.kinds() == ["public_key_ocmf"] + ["powermeter"] * 5
    assert [round(b - a, 6) for a, b in zip(stamps, stamps[1:], strict=False)] == [1.0] * 4


def test_slow_answer_does_not_shift_the_schedule() -> None:
    meter = FakeMeter()
    clock = new_clock()
    # Each livemeasure takes 0.3 s; the beat must stay at whole seconds.
    meter.fail["livemeasure"] = [lambda: clock.advance(0.3)] * 10
    _, stamps, _ = run_loop(meter, 6, clock)
    periods = [round(b - a, 6) for a, b in zip(stamps, stamps[1:], strict=False)]
    assert periods == [1.0] * 5


def test_communication_fault_raised_once_and_cleared_once() -> None:
    meter = FakeMeter()
    meter.fail["livemeasure"] = [unreachable("livemeasure")] * 4
    outputs, _, _ = run_loop(meter, 7)
    faults = [e for e in outputs.events if e[0] in ("raise", "clear")]
    assert faults == [("raise", ("CommunicationFault", "")), ("clear", ("CommunicationFault", ""))]
    assert outputs.kinds().count("powermeter") == 3


def test_init_retries_quickly_then_publishes() -> None:
    meter = FakeMeter()
    meter.fail["status"] = [unreachable("status")] * 3
    outputs, _, clock = run_loop(meter, 1)
    assert outputs.kinds() == ["raise", "public_key_ocmf", "powermeter", "clear"]
    # Three failed attempts a second apart, not the 10 s retry delay.
    assert clock.monotonic() - 1000.0 < 5.0


def test_housekeeping_sleeps_until_its_next_work_within_bounds() -> None:
    clock = new_clock()
    meter = FakeMeter()
    timesync = TimeSync(meter, clock, timezone="+00:00", dst={})
    controller = MeterController(
        meter, ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)), clock, timesync
    )
    loop = ReadyLoop(controller, RecordingOutputs(), clock, LoopTiming())
    controller.initialize()  # syncs the clock; the next sync is due once the window passed
    now = clock.monotonic()
    due = controller.next_background_work
    assert due is not None
    assert due > now + 5
    assert loop.housekeeping_pause(now) == 5.0  # nothing due soon: the longest pause
    clock.advance(due - now - 2.5)
    assert loop.housekeeping_pause(clock.monotonic()) == 2.5  # wakes when the sync is due
    clock.advance(2.4)
    assert loop.housekeeping_pause(clock.monotonic()) == 1.0  # never less than an interval


def test_heartbeat_only_in_cycles_the_meter_answered() -> None:
    """The container's health check reads this beat: it stops while the meter is away."""
    meter = FakeMeter()
    meter.fail["livemeasure"] = [unreachable("livemeasure")] * 3
    clock = new_clock()
    beats: list[float] = []

    def beat() -> None:
        beats.append(clock.monotonic())

    _, cycles, _ = run_loop(meter, 6, clock, on_meter_answer=beat)
    assert len(cycles) == 6
    assert beats == cycles[3:]
