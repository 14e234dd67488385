"""The demo's words for EvseManager's boot-time ``stop_transaction("")``."""

from __future__ import annotations

from datetime import datetime, timezone

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.demo import boot_stop_summary
from lem_dcbm.everest import results
from tests.support.fake_meter import FakeMeter


def test_nothing_running_at_boot_is_the_expected_answer_not_a_failure() -> None:
    meter = FakeMeter()
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    timesync = TimeSync(meter, clock, timezone="+00:00", dst={})
    controller = MeterController(
        meter, ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)), clock, timesync
    )
    controller.initialize()
    answer = results.stop_response(controller.stop_transaction(""))
    assert answer["status"] == "UNEXPECTED_ERROR"  # what the interface makes of it

    line = boot_stop_summary(answer)

    assert "nothing was running, the expected answer after a boot" in line
    assert "fail" not in line
    assert "unexpected answer" not in line


def test_a_stopped_leftover_and_anything_else_are_said_as_such() -> None:
    assert "a transaction left running was stopped" in boot_stop_summary({"status": "OK"})
    odd = boot_stop_summary({"status": "UNEXPECTED_ERROR", "error": "meter unreachable"})
    assert "unexpected answer" in odd
    assert "meter unreachable" in odd
