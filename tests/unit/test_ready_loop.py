"""The ready loop's schedule and fault reporting, with time under test control."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.ready_loop import LoopTiming, ReadyLoop
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from tests.support.fake_meter import FakeMeter, unreachable
from tests.support.fake_outputs import RecordingOutputs


def new_clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))


def new_controller(meter: FakeMeter, clock: ManualClock) -> MeterController:
    timesync = TimeSync(meter, clock, timezone="+00:00", dst={})
    return MeterController(
        meter, ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)), clock, timesync
    )


def run_loop(
    meter: FakeMeter,
    cycles: int,
    clock: ManualClock | None = None,
    on_meter_answer: Callable[[], None] | None = None,
) -> tuple[RecordingOutputs, list[float], ManualClock]:
    clock = clock or new_clock()
    controller = new_controller(meter, clock)
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


def test_init_retries_at_the_configured_delay_then_publishes() -> None:
    meter = FakeMeter()
    meter.fail["status"] = [unreachable("status")] * 3
    clock = new_clock()
    controller = new_controller(meter, clock)
    outputs = RecordingOutputs()
    stop = threading.Event()
    loop = ReadyLoop(
        controller,
        outputs,
        clock,
        LoopTiming(init_retries=25, init_retry_delay_s=4.0),
        on_cycle=stop.set,
    )
    loop.run(stop)
    assert outputs.kinds() == ["raise", "public_key_ocmf", "powermeter", "clear"]
    # Three failed attempts, each followed by the configured 4 s, not a 1 s beat.
    assert clock.monotonic() - 1000.0 == pytest.approx(12.0)


def test_init_never_gives_up_and_says_once_when_the_retries_are_used_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``resilience_initial_connection_retries`` = 2: the third failure says so, once."""
    meter = FakeMeter()
    meter.fail["status"] = [unreachable("status")] * 6
    clock = new_clock()
    controller = new_controller(meter, clock)
    waits: list[float] = []
    wait = clock.wait

    def recording_wait(event: threading.Event, seconds: float) -> bool:
        if controller.info is None:
            waits.append(seconds)
        return wait(event, seconds)

    clock.wait = recording_wait  # type: ignore[method-assign]
    outputs = RecordingOutputs()
    stop = threading.Event()
    timing = LoopTiming(init_retries=2, init_retry_delay_s=7.0)
    loop = ReadyLoop(controller, outputs, clock, timing, on_cycle=stop.set)
    with caplog.at_level(logging.ERROR, logger="lem_dcbm.core.ready_loop"):
        loop.run(stop)
    # Six failures, every pause the configured delay; the seventh attempt succeeds.
    assert waits == [7.0] * 6
    assert outputs.kinds()[-2:] == ["powermeter", "clear"]
    missing = [r.getMessage() for r in caplog.records if "start-up attempts" in r.getMessage()]
    assert missing == [
        "meter still unreachable after 3 start-up attempts; not giving up: asking again every 7 s"
    ]


def test_housekeeping_sleeps_until_its_next_work_within_bounds() -> None:
    clock = new_clock()
    meter = FakeMeter()
    controller = new_controller(meter, clock)
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
