"""Meter health bits as EVerest errors: which error, once per episode, polling schedule."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.health_monitor import HEALTH_BITS, HealthMonitor
from lem_dcbm.core.ready_loop import LoopTiming, ReadyLoop
from lem_dcbm.core.temperature_monitor import TemperatureLimits, TemperatureMonitor
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.errors import LemDcbmError, MeterConnectionError
from lem_dcbm.meter.models import ERROR_BITS, STATUS_BITS, MeterStatus
from tests.support.fake_meter import FakeMeter, unreachable
from tests.support.fake_outputs import RecordingOutputs

HEALTHY_STATUS = dict.fromkeys(STATUS_BITS, False) | {
    "suLinkStatusIsOk": True,
    "timeSyncStatusIsOk": True,
}
BLOCKING = {
    "suLinkStatusIsOk": False,
    "muFatalErrorOccured": True,
    "timeSyncStatusIsOk": False,
    "tamperingIsDetected": True,
}
INDICATORS = (
    "overTemperatureIsDetected",
    "reversedVoltage",
    "suMeasureFailureOccurred",
)


def status(
    bits: dict[str, bool] | None = None, errors: dict[str, bool] | None = None
) -> MeterStatus:
    return MeterStatus(
        value=0,
        bits=HEALTHY_STATUS | (bits or {}),
        error_value=0,
        error_bits=dict.fromkeys(ERROR_BITS, False) | (errors or {}),
        meter_id="12024072805",
        public_key_ocmf="",
        public_key="",
        firmware_version="MU-2.3.0.1",
        time="",
    )


@dataclass
class StatusMeter:
    """Answers ``status()`` from a list; an exception in the list is raised instead."""

    answers: list[MeterStatus | LemDcbmError] = field(default_factory=list)
    api_version: str = "v1"
    calls: int = 0

    def status(self) -> MeterStatus:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, LemDcbmError):
            raise answer
        return answer


def make(
    *answers: MeterStatus | LemDcbmError,
) -> tuple[HealthMonitor, StatusMeter, RecordingOutputs, ManualClock]:
    clock = ManualClock()
    meter = StatusMeter(list(answers))
    outputs = RecordingOutputs()
    return HealthMonitor(meter, outputs, clock, poll_interval_s=5.0), meter, outputs, clock  # type: ignore[arg-type]


def test_healthy_meter_raises_nothing() -> None:
    mon, _, outputs, _ = make(status())
    assert mon.poll_if_due()
    assert outputs.events == []


@pytest.mark.parametrize(("bit", "bad"), sorted(BLOCKING.items()))
def test_blocking_status_bits_are_vendor_errors(bit: str, bad: bool) -> None:
    mon, _, outputs, _ = make()
    mon.observe(status({bit: bad}))
    mon.observe(status({bit: bad}))
    mon.observe(status())
    assert outputs.events == [("raise", ("VendorError", bit)), ("clear", ("VendorError", bit))]


@pytest.mark.parametrize("bit", INDICATORS)
def test_indicator_bits_are_vendor_warnings(bit: str) -> None:
    mon, _, outputs, _ = make()
    mon.observe(status({bit: True}))
    mon.observe(status({bit: True}))
    mon.observe(status({bit: False}))
    assert outputs.events == [("raise", ("VendorWarning", bit)), ("clear", ("VendorWarning", bit))]


@pytest.mark.parametrize("bit", ERROR_BITS)
def test_error_bits_are_vendor_errors(bit: str) -> None:
    mon, _, outputs, _ = make()
    mon.observe(status(errors={bit: True}))
    assert mon.active == {bit}
    mon.observe(status(errors={bit: True}))
    mon.observe(status())
    assert outputs.events == [("raise", ("VendorError", bit)), ("clear", ("VendorError", bit))]
    assert mon.active == set()


def test_every_bit_but_the_transaction_bit_is_watched() -> None:
    watched = {bit.name for bit in HEALTH_BITS}
    assert watched == (set(STATUS_BITS) - {"transactionIsOnGoing"}) | set(ERROR_BITS)


def test_a_running_transaction_is_not_a_problem() -> None:
    mon, _, outputs, _ = make()
    mon.observe(status({"transactionIsOnGoing": True}))
    assert outputs.events == []


def test_several_bits_at_once_each_raise_and_clear_on_their_own() -> None:
    mon, _, outputs, _ = make()
    mon.observe(status({"muFatalErrorOccured": True}, {"logbookIsFull": True}))
    mon.observe(status({"muFatalErrorOccured": True, "reversedVoltage": True}))
    mon.observe(status({"reversedVoltage": True}))
    assert outputs.events == [
        ("raise", ("VendorError", "muFatalErrorOccured")),
        ("raise", ("VendorError", "logbookIsFull")),
        ("raise", ("VendorWarning", "reversedVoltage")),
        ("clear", ("VendorError", "logbookIsFull")),
        ("clear", ("VendorError", "muFatalErrorOccured")),
    ]


def test_missing_bits_change_nothing() -> None:
    mon, _, outputs, _ = make()
    mon.observe(status({"suLinkStatusIsOk": False}))
    partial = MeterStatus(0, {}, 0, {}, "1", "", "", "MU-0.1.4.0", "")
    mon.observe(partial)
    assert outputs.events == [("raise", ("VendorError", "suLinkStatusIsOk"))]


def test_polls_every_interval_only() -> None:
    mon, meter, outputs, clock = make(status(), status({"timeSyncStatusIsOk": False}), status())
    assert mon.poll_if_due()
    for _ in range(4):
        clock.advance(1.0)
        assert not mon.poll_if_due()
    assert meter.calls == 1
    clock.advance(1.0)
    assert mon.poll_if_due()
    assert outputs.events == [("raise", ("VendorError", "timeSyncStatusIsOk"))]
    clock.advance(5.0)
    assert mon.poll_if_due()
    assert outputs.events[-1] == ("clear", ("VendorError", "timeSyncStatusIsOk"))
    assert meter.calls == 3


def test_unreadable_status_keeps_errors_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    lost = MeterConnectionError("GET", "/v1/status", "connection refused")
    mon, meter, outputs, clock = make(
        status({"tamperingIsDetected": True}), lost, lost, lost, status()
    )
    assert mon.poll_if_due()
    with caplog.at_level(logging.DEBUG, logger="lem_dcbm.core.health_monitor"):
        for _ in range(3):
            clock.advance(5.0)
            assert not mon.poll_if_due()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert mon.active == {"tamperingIsDetected"}
    clock.advance(5.0)
    assert mon.poll_if_due()
    assert outputs.events == [
        ("raise", ("VendorError", "tamperingIsDetected")),
        ("clear", ("VendorError", "tamperingIsDetected")),
    ]
    assert meter.calls == 5


def test_ready_loop_polls_health_only_while_the_meter_answers() -> None:
    clock = ManualClock()
    meter = FakeMeter(time_sync_ok=False)
    meter.fail["livemeasure"] = [unreachable("livemeasure")] * 12
    controller = MeterController(
        meter,
        ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)),
        clock,
        TimeSync(meter, clock, timezone="+00:00", dst={}),
    )
    outputs = RecordingOutputs()
    # The fake meter's sensors read 30 and 28 degC.
    temperature = TemperatureMonitor(
        TemperatureLimits(warning_level_c=29.0, min_time_s=0), outputs, clock
    )
    health = HealthMonitor(meter, outputs, clock, poll_interval_s=5.0)
    stop = threading.Event()
    cycles: list[int] = []

    def on_cycle() -> None:
        cycles.append(meter.calls.count("status"))
        if len(cycles) == 20:
            stop.set()

    loop = ReadyLoop(
        controller,
        outputs,
        clock,
        LoopTiming(),
        on_cycle=on_cycle,
        temperature=temperature,
        health=health,
    )
    loop.run(stop)
    at_init = cycles[0]
    assert cycles[11] == at_init  # 12 cycles without the meter: no status polls
    assert cycles[12] == at_init + 1  # back: polled at once, then every 5 s
    assert cycles[19] == at_init + 2
    raised = [payload for kind, payload in outputs.events if kind == "raise"]
    assert raised == [
        ("CommunicationFault", ""),
        ("VendorWarning", "TemperatureWarning"),
        ("VendorError", "timeSyncStatusIsOk"),
    ]
