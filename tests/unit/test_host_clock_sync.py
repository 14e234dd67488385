"""The meter clock is written only when the host clock can be trusted.

The simulated meter behind the real client and controller, on one manual clock that is
the host's clock; the kernel's synchronisation state is injected.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.host_clock_trust import HOST_CLOCK_UNTRUSTED, HostClockCheck, KernelClock
from lem_dcbm.core.timesync import NtpServer, TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner
from tests.support.device_transport import DeviceTransport

HOST_START = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
THREE_DAYS = 3 * 24 * 3600.0
DST = {"activated": False, "offset": 60}
SYNCED = KernelClock(True, 0.01, "adjtimex: state 0, maximum error 0.01 s")
UNSYNCED = KernelClock(False, 16.0, "adjtimex: TIME_ERROR, STA_UNSYNC, maximum error 16 s")


class Alerts:
    """Keeps what is raised and cleared, and logs a raise as every real sink does."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def warn(self, sub_type: str, message: str) -> None:
        self.events.append(("warn", sub_type))
        logging.getLogger("test.alerts").warning("raised %s: %s", sub_type, message)

    def clear(self, sub_type: str) -> None:
        self.events.append(("clear", sub_type))

    def about_the_clock(self) -> list[str]:
        return [kind for kind, sub_type in self.events if sub_type == HOST_CLOCK_UNTRUSTED]


class Kernel:
    """The kernel's answer, switched by the test."""

    def __init__(self, state: KernelClock) -> None:
        self.state = state

    def __call__(self) -> KernelClock:
        return self.state


class Stack:
    def __init__(self, kernel: KernelClock, *, synced: bool = True, meter_offset_s: float = 0):
        self.clock = ManualClock(HOST_START)
        self.device = SimulatedMeter(
            self.clock,
            OcmfSigner.generate(),
            MeterConfig(min_transaction_seconds=0, settings_window_seconds=0, synced=synced),
        )
        self.device.set_clock_offset(meter_offset_s)
        self.kernel = Kernel(kernel)
        self.alerts = Alerts()
        client = MeterClient(DeviceTransport(self.device))
        timesync = TimeSync(
            client,
            self.clock,
            timezone="+01:00",
            dst=DST,
            host_clock=HostClockCheck(kernel=self.kernel),
            alerts=self.alerts,
        )
        self.timesync = timesync
        self.controller = MeterController(
            client,
            ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0)),
            self.clock,
            timesync,
            alerts=self.alerts,
        )

    def utc_writes(self) -> list[str]:
        return [
            w["body"]["time"]["utc"]
            for w in self.device.state()["settings_writes"]
            if "utc" in w["body"].get("time", {})
        ]

    def meter_utc(self) -> datetime:
        return datetime.fromisoformat(self.device.status()["time"]).astimezone(timezone.utc)

    def session(self, transaction_id: str) -> Any:
        request = {
            "evse_id": "DE*LEM*E1",
            "transaction_id": transaction_id,
            "identification_status": "ASSIGNED",
            "identification_type": "ISO14443",
            "identification_flags": [],
        }
        started = self.controller.start_transaction(transaction_request(request))
        assert started.ok, started.error
        self.clock.advance(300)
        stopped = self.controller.stop_transaction(transaction_id)
        assert stopped.ok, stopped.error
        return stopped


def record_times(stopped: Any) -> list[datetime]:
    readings = parse_ocmf(stopped.record.ocmf).payload["RD"]
    stamps = [r["TM"].split(" ")[0].replace(",", ".") for r in readings if "TM" in r]
    return [datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z") for s in stamps]


def untrusted_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "host clock not written" in r.getMessage()]


def test_a_host_clock_three_days_ahead_never_reaches_the_meter_or_the_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The meter's sync is valid and its clock right; the host runs 3 days ahead, unsynced.
    stack = Stack(UNSYNCED, meter_offset_s=-THREE_DAYS)
    with caplog.at_level(logging.INFO):
        stack.controller.initialize()
        for _ in range(5):  # five re-judgements, a minute apart
            stack.clock.advance(60)
            stack.controller.housekeeping()
        first = stack.session("tx-1")
        second = stack.session("tx-2")

    assert stack.utc_writes() == []
    assert stack.device.state()["settings_writes"] == []
    host_now = stack.clock.utc_now()
    for stamp in record_times(first) + record_times(second):
        assert host_now - timedelta(days=3, hours=1) < stamp < host_now - timedelta(days=2)
    [line] = untrusted_lines(caplog)
    assert "+259200 s off the meter's valid clock" in line
    assert "the meter keeps its own clock" in line
    assert stack.alerts.about_the_clock() == ["warn"]
    assert stack.timesync.untrusted is not None


def test_the_host_time_goes_in_once_the_kernel_is_synchronised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = Stack(UNSYNCED, meter_offset_s=-THREE_DAYS)
    stack.controller.initialize()
    stack.clock.advance(30)
    stack.kernel.state = SYNCED  # the host's NTP client found its source
    stack.controller.housekeeping()
    assert stack.utc_writes() == []  # judged again a minute after the last judgement
    with caplog.at_level(logging.INFO):
        stack.clock.advance(30)
        stack.controller.housekeeping()
    assert len(stack.utc_writes()) == 1
    assert abs(stack.meter_utc() - stack.clock.utc_now()) < timedelta(seconds=2)
    assert stack.alerts.about_the_clock() == ["warn", "clear"]
    assert any("host clock trusted again" in r.getMessage() for r in caplog.records)
    assert stack.timesync.untrusted is None


def test_a_meter_clock_that_agrees_lets_the_sync_be_renewed() -> None:
    stack = Stack(UNSYNCED, meter_offset_s=-20)
    stack.controller.initialize()
    assert len(stack.utc_writes()) == 1
    assert stack.alerts.about_the_clock() == []


def test_first_boot_without_a_trusted_clock_refuses_starts_and_writes_nothing() -> None:
    stack = Stack(UNSYNCED, synced=False)
    stack.controller.initialize()
    request = {
        "evse_id": "DE*LEM*E1",
        "transaction_id": "tx-1",
        "identification_status": "ASSIGNED",
        "identification_type": "ISO14443",
        "identification_flags": [],
    }
    refused = stack.controller.start_transaction(transaction_request(request))
    assert not refused.ok
    assert refused.error is not None
    assert "host clock is not trusted" in refused.error
    assert "the meter's own time sync is not valid" in refused.error
    assert stack.utc_writes() == []
    assert stack.device.state()["transactions"] == []
    stack.kernel.state = SYNCED
    assert stack.controller.start_transaction(transaction_request(request)).ok
    assert len(stack.utc_writes()) == 1


def test_ntp_configured_later_ends_the_warning() -> None:
    stack = Stack(UNSYNCED, meter_offset_s=-THREE_DAYS)
    stack.controller.initialize()
    settings = stack.timesync.settings
    stack.timesync.reconfigure(replace(settings, ntp_servers=(NtpServer("192.0.2.10", 123),)))
    stack.controller.housekeeping()
    assert stack.alerts.about_the_clock() == ["warn", "clear"]
    assert stack.timesync.untrusted is None
    assert stack.utc_writes() == []


def test_without_an_alert_sink_the_time_sync_says_it_once_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(HOST_START)
    device = SimulatedMeter(clock, OcmfSigner.generate(), MeterConfig(settings_window_seconds=0))
    device.set_clock_offset(-THREE_DAYS)
    timesync = TimeSync(
        MeterClient(DeviceTransport(device)),
        clock,
        timezone="+01:00",
        dst=DST,
        host_clock=HostClockCheck(kernel=Kernel(UNSYNCED)),
    )
    with caplog.at_level(logging.INFO):
        assert timesync.sync() is False  # kept the meter's clock: its sync is not renewed
        for _ in range(3):
            clock.advance(60)
            assert not timesync.sync_if_due()
        assert timesync.sync() is False
    [line] = untrusted_lines(caplog)
    assert line.startswith("host clock not written into the meter: the kernel clock is not")
    assert device.state()["settings_writes"] == []
