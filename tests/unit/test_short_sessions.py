"""Stops within the meter's 2-minute minimum: the simulated meter, the real client, one clock."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.short_session import STOP_ANSWER_LIMIT_S, plan_wait
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.records.checks import RecordExpectation, check_record
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from tests.support.device_transport import DeviceTransport
from tests.support.record_rig import SIGNER, START, LateRoad, request


class ShortRig:
    """A meter with the real 120 s minimum and a controller on one manual clock."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.clock = ManualClock(START)
        self.device = SimulatedMeter(
            self.clock, SIGNER, MeterConfig(min_transaction_seconds=120.0, api="v1")
        )
        self.transport = DeviceTransport(self.device)
        self.late = LateRoad()
        self.journal_dir = tmp_path / "journal"
        # The longest configurable wait (a charger known to bear it); the default is below.
        settings.setdefault("stop_minimum_wait_s", 105.0)
        self.settings = settings
        self.controller = self.restart()

    def restart(self) -> MeterController:
        client = MeterClient(self.transport)
        controller = MeterController(
            client,
            ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0), **self.settings),
            self.clock,
            TimeSync(client, self.clock, timezone="+01:00", dst={"activated": False}),
            records=RecordBook(TransactionJournal(self.journal_dir, clock=self.clock)),
            late_records=self.late,
        )
        controller.initialize()
        self.controller = controller
        return controller

    def verifies(self, record: str, transaction_id: str) -> bool:
        verdict = check_record(
            record,
            RecordExpectation(meter_id=self.device.config.meter_id),
            self.device.status()["publicKeyOcmf"],
        )
        return verdict.ok and transaction_id in record

    def running(self) -> Any:
        return self.device.state()["running_transaction"]


def test_a_20_s_session_waits_for_the_minimum_and_ends_with_its_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = ShortRig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("short-1"))).ok
    rig.device.set_load(power_kw=11.0)
    rig.clock.advance(20.0)
    arrival = rig.clock.monotonic()
    with caplog.at_level(logging.INFO, logger="lem_dcbm.core.controller"):
        answer = rig.controller.stop_transaction("short-1")
    answered_after = rig.clock.monotonic() - arrival
    assert answer.ok, answer.error
    assert answer.record is not None
    assert '"TX":"E"' in answer.record.ocmf
    assert rig.verifies(answer.record.ocmf, "short-1")
    assert rig.running() is None
    # Within the minimum's end (100 s on) and EvseManager's 120 s deadlock detector.
    assert 100.0 <= answered_after <= STOP_ANSWER_LIMIT_S
    assert any("waiting 101 s, then stopping it" in r.getMessage() for r in caplog.records)
    assert rig.late.published == []
    # The charger goes on: the next session starts and stops normally.
    assert rig.controller.start_transaction(transaction_request(request("short-2"))).ok
    rig.clock.advance(130.0)
    assert rig.controller.stop_transaction("short-2").ok


def test_by_default_a_stop_waits_at_most_15_s_so_a_20_s_session_goes_the_late_road(
    tmp_path: Path,
) -> None:
    # In a whole EVerest charger a stop that blocks EvseManager much past the framework's
    # 20 s MQTT keepalive took the stack down (docs/everest-sil.md): 15 s by default.
    default = ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0))
    assert default.stop_minimum_wait_s == 15.0
    rig = ShortRig(tmp_path, stop_minimum_wait_s=default.stop_minimum_wait_s)
    assert rig.controller.start_transaction(transaction_request(request("short-20"))).ok
    rig.clock.advance(20.0)
    arrival = rig.clock.monotonic()
    answer = rig.controller.stop_transaction("short-20")
    assert not answer.ok
    assert rig.clock.monotonic() - arrival < 1.0
    rig.clock.advance(102.0)
    rig.controller.housekeeping()
    assert [r.transaction_id for r in rig.late.published] == ["short-20"]
    # A session of 106 s waits its 15 s and ends with its record.
    assert rig.controller.start_transaction(transaction_request(request("short-106"))).ok
    rig.clock.advance(106.0)
    arrival = rig.clock.monotonic()
    answer = rig.controller.stop_transaction("short-106")
    assert answer.ok, answer.error
    assert answer.record is not None
    assert 14.0 <= rig.clock.monotonic() - arrival <= 20.0


def test_a_stop_too_early_to_wait_for_answers_at_once_and_the_record_goes_late(
    tmp_path: Path,
) -> None:
    rig = ShortRig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("blink-1"))).ok
    rig.clock.advance(5.0)
    arrival = rig.clock.monotonic()
    answer = rig.controller.stop_transaction("blink-1")
    assert not answer.ok
    assert rig.clock.monotonic() - arrival < 1.0
    assert answer.error is not None
    assert "minimum duration of 120 s" in answer.error
    assert "records/blink-1" in answer.error
    assert rig.running() is not None
    # Housekeeping stops it once the meter allows it, and the record takes the late road.
    rig.controller.housekeeping()
    assert rig.running() is not None
    rig.clock.advance(120.0)
    rig.controller.housekeeping()
    assert rig.running() is None
    [late] = rig.late.published
    assert late.transaction_id == "blink-1"
    assert late.signature_valid
    assert '"TX":"E"' in late.ocmf


def test_a_deferred_stop_survives_a_restart_of_the_module(tmp_path: Path) -> None:
    rig = ShortRig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("blink-2"))).ok
    rig.clock.advance(3.0)
    assert not rig.controller.stop_transaction("blink-2").ok
    rig.clock.advance(200.0)
    controller = rig.restart()
    controller.housekeeping()
    assert rig.running() is None
    assert [r.transaction_id for r in rig.late.published] == ["blink-2"]


def test_a_shorter_configured_wait_moves_the_stop_to_the_background(tmp_path: Path) -> None:
    rig = ShortRig(tmp_path, stop_minimum_wait_s=30.0)
    assert rig.controller.start_transaction(transaction_request(request("short-3"))).ok
    rig.clock.advance(60.0)
    answer = rig.controller.stop_transaction("short-3")
    assert not answer.ok
    assert "stop_minimum_wait_ms 30000" in (answer.error or "")


def test_a_stop_that_waited_before_it_reached_the_meter_waits_less(tmp_path: Path) -> None:
    rig = ShortRig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("short-4"))).ok
    rig.clock.advance(20.0)
    arrival = rig.clock.monotonic()
    rig.clock.advance(10.0)  # e.g. waited for the module to be set up
    answer = rig.controller.stop_transaction("short-4", received_at=arrival)
    # 91 s more would end 101 s after arrival: still within the answer limit.
    assert answer.ok, answer.error
    assert rig.clock.monotonic() - arrival <= STOP_ANSWER_LIMIT_S


def test_shutdown_interrupts_the_wait_and_keeps_the_stop_for_later(tmp_path: Path) -> None:
    rig = ShortRig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("short-5"))).ok
    rig.clock.advance(20.0)
    rig.controller.interrupt_waits()
    answer = rig.controller.stop_transaction("short-5")
    assert not answer.ok
    assert "shutting down" in (answer.error or "")
    controller = rig.restart()
    rig.clock.advance(120.0)
    controller.housekeeping()
    assert rig.running() is None
    assert [r.transaction_id for r in rig.late.published] == ["short-5"]


def test_a_meter_that_accepts_early_is_not_kept_waiting(tmp_path: Path) -> None:
    rig = ShortRig(tmp_path)
    rig.device = SimulatedMeter(rig.clock, SIGNER, MeterConfig(min_transaction_seconds=0))
    rig.transport.device = rig.device
    controller = rig.restart()
    assert controller.start_transaction(transaction_request(request("quick-1"))).ok
    rig.clock.advance(2.0)
    before = rig.clock.monotonic()
    assert controller.stop_transaction("quick-1").ok
    assert rig.clock.monotonic() - before < 1.0


@pytest.mark.parametrize(
    ("elapsed", "allowed", "spent", "wait", "deferred"),
    [
        (None, 105.0, 0.0, 0.0, False),
        (130.0, 105.0, 0.0, 0.0, False),
        (20.0, 105.0, 0.0, 101.0, False),
        (14.0, 105.0, 0.0, 107.0, True),
        (20.0, 60.0, 0.0, 101.0, True),
        (20.0, 105.0, 10.0, 101.0, True),
    ],
)
def test_plan_wait(
    elapsed: float | None, allowed: float, spent: float, wait: float, deferred: bool
) -> None:
    plan = plan_wait(elapsed, minimum_s=120.0, allowed_s=allowed, spent_s=spent)
    assert (plan.wait_s, plan.deferred) == (wait, deferred)


def test_a_new_start_soon_after_a_very_short_session_waits_and_starts(tmp_path: Path) -> None:
    rig = ShortRig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("blink-3"))).ok
    rig.clock.advance(5.0)
    assert not rig.controller.stop_transaction("blink-3").ok  # its stop moved to the background
    rig.clock.advance(25.0)  # a new car, 30 s after the first one's start
    arrival = rig.clock.monotonic()
    started = rig.controller.start_transaction(transaction_request(request("next-1")))
    assert started.ok, started.error
    assert rig.clock.monotonic() - arrival <= STOP_ANSWER_LIMIT_S
    assert rig.running() == "next-1"
    assert [r.transaction_id for r in rig.late.published] == ["blink-3"]
