"""The meter's logbook never empties: the module spends its entries sparingly.

Found by ``bench/endurance.py sessions``: writing the clock, timezone and DST rules
before every start made five logbook entries per session, and the simulated meter's
40 000-entry logbook filled after about 8 000 sessions, after which the meter refuses
every transaction for good.
"""

from __future__ import annotations

from pathlib import Path

from lem_dcbm.everest.shapes import transaction_request
from tests.support.record_rig import Rig, request


def run_sessions(rig: Rig, count: int, gap_s: float) -> None:
    for n in range(count):
        assert rig.controller.start_transaction(transaction_request(request(f"tx-{n}"))).ok
        rig.charge(600)
        assert rig.controller.stop_transaction(f"tx-{n}").ok
        rig.clock.advance(gap_s)
        rig.controller.housekeeping()


def test_a_busy_day_costs_the_logbook_little_more_than_its_sessions(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.clock.advance(300)
    rig.controller.housekeeping()  # the settings window has passed
    before = rig.device.logbook()["count"]
    run_sessions(rig, 48, gap_s=1200)  # a session every half hour, for a day
    events = rig.device.logbook()["count"] - before
    # Start and stop of each session, and the clock at most once an hour.
    assert events <= 2 * 48 + 25, events


def test_a_meter_clock_that_drifted_is_written_before_the_start(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.clock.advance(300)
    rig.controller.housekeeping()
    writes = len(rig.device.state()["settings_writes"])
    rig.device.set_clock_offset(-30)
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    assert len(rig.device.state()["settings_writes"]) == writes + 1
    assert abs(rig.device.state()["time_sync"]["clock_offset_s"]) < 1
