"""The module meets each of the meter's limits before the customer does.

The simulated meter serves over real sockets from this process; it and the controller
share one manual clock, so hours-long limits (a 48 h time sync) are reached at once.
The meter starts at a limit (a full ring or logbook, a sync about to expire) where a
test needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import MeterController
from lem_dcbm.core.meter_limits import SESSION_SYNC_MARGIN, UNSAVED_RECORDS
from lem_dcbm.core.timesync import NtpServer
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.meter.transport import HttpTransport
from lem_dcbm.simulator.faults import Faults
from tests.support.record_rig import Alerts, LateRoad, build_controller, request
from tests.support.simulator_inprocess import InProcessSimulator, start_in_process

START = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)


class SocketRig:
    """Controller and journal against an in-process simulator over HTTP, on one clock."""

    def __init__(self, tmp_path: Path, *, ntp: bool = False, **meter: Any) -> None:
        self.clock = ManualClock(START)
        meter.setdefault("api", "v1")
        self.sim: InProcessSimulator = start_in_process(
            tmp_path / "meter", clock=self.clock, **meter
        )
        self.journal_dir = tmp_path / "journal"
        self.late = LateRoad()
        self.alerts = Alerts()
        self.ntp = ntp
        self.controller = self.restart()

    def restart(self) -> MeterController:
        client = MeterClient(HttpTransport(self.sim.base_url, timeout_s=5.0))
        servers = (NtpServer("127.0.0.1", 123),) if self.ntp else ()
        self.controller = build_controller(
            client, self.clock, self.journal_dir, self.alerts, self.late, ntp_servers=servers
        )
        return self.controller

    def fault(self, **faults: Any) -> None:
        self.sim.server.faults.set(Faults(**faults))

    def clear_faults(self) -> None:
        self.sim.server.faults.clear()

    def session(self, transaction_id: str) -> Any:
        started = self.controller.start_transaction(transaction_request(request(transaction_id)))
        assert started.ok, started
        self.sim.device.set_load(power_kw=20.0)
        self.clock.advance(600)
        return self.controller.stop_transaction(transaction_id)

    def record_at_meter(self, transaction_id: str) -> str | None:
        for tx in self.sim.device.state()["transactions"]:
            if tx["transactionId"] == transaction_id:
                return str(tx["ocmf"])
        return None


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[list[SocketRig]]:
    made: list[SocketRig] = []
    yield made
    for rig in made:
        rig.sim.stop()


def make(rigs: list[SocketRig], tmp_path: Path, **options: Any) -> SocketRig:
    rig = SocketRig(tmp_path, **options)
    rigs.append(rig)
    return rig


# -- the ring of records --------------------------------------------------------------------


def test_no_start_overwrites_a_record_the_journal_still_waits_for(
    rigs: list[SocketRig], tmp_path: Path
) -> None:
    # A full ring of three (the real one holds 20 399; the module learns the size when a
    # start adds no record), and every record fetch fails: the records stay at the meter.
    rig = make(rigs, tmp_path, storage_capacity=3, ring_filled=3)
    rig.fault(http_status=500, paths=("/v1/ocmf",))
    for transaction_id in ("tx-a", "tx-b", "tx-c"):
        assert not rig.session(transaction_id).ok  # no record yet: the late road
    refused = rig.controller.start_transaction(transaction_request(request("tx-d")))
    assert not refused.ok
    assert "would overwrite the record of tx-a" in refused.error
    assert UNSAVED_RECORDS in rig.alerts.active
    assert rig.sim.device.state()["running_transaction"] is None
    kept_at_meter = rig.record_at_meter("tx-a")
    assert kept_at_meter is not None
    # Once the meter hands the records out again, they are saved and starts go on.
    rig.clear_faults()
    rig.clock.advance(3600)
    rig.controller.housekeeping()
    assert {r.transaction_id for r in rig.late.published} == {"tx-a", "tx-b", "tx-c"}
    assert rig.controller.start_transaction(transaction_request(request("tx-d"))).ok
    assert UNSAVED_RECORDS not in rig.alerts.active
    [late_a] = [r for r in rig.late.published if r.transaction_id == "tx-a"]
    assert late_a.ocmf == kept_at_meter


def test_a_stop_beyond_the_lookup_window_finds_the_record_by_its_slot(
    rigs: list[SocketRig], tmp_path: Path
) -> None:
    rig = make(rigs, tmp_path, ocmf_search_window=3)
    assert rig.controller.start_transaction(
        transaction_request(request("tx-old"))
    ).ok  # its record number kept
    rig.fault(http_status=500, paths=("/v1/ocmf?transactionId=tx-old",))
    rig.clock.advance(600)
    assert not rig.controller.stop_transaction("tx-old").ok
    rig.clear_faults()
    for n in range(3):
        assert rig.session(f"tx-{n}").ok
    # tx-old is now four transactions back: GET /ocmf?transactionId= no longer finds it.
    answer = rig.controller.stop_transaction("tx-old")
    assert answer.ok, answer.error
    assert answer.record is not None
    assert answer.record.ocmf == rig.record_at_meter("tx-old")


# -- the logbook ----------------------------------------------------------------------------


def test_a_full_logbook_refuses_the_start_naming_it(rigs: list[SocketRig], tmp_path: Path) -> None:
    rig = make(rigs, tmp_path, logbook_capacity=100, logbook_filled=100)
    answer = rig.controller.start_transaction(transaction_request(request("tx-1")))
    assert not answer.ok
    assert "logbookIsFull" in answer.error
    assert "refuses every transaction from now on" in answer.error


# -- the time sync --------------------------------------------------------------------------


def test_no_start_that_the_sync_expiry_would_invalidate(
    rigs: list[SocketRig], tmp_path: Path
) -> None:
    rig = make(rigs, tmp_path)  # the module syncs at init: valid for 48 h from now
    synced_at = rig.clock.utc_now()
    rig.fault(http_status=500, paths=("/v1/settings",), methods=("PUT",))
    rig.clock.advance(30 * 3600)  # 18 h left: a session still fits
    started = rig.controller.start_transaction(transaction_request(request("tx-fits")))
    assert started.ok
    assert started.max_stop_time == synced_at + timedelta(hours=48) - timedelta(minutes=1)
    rig.clock.advance(600)
    assert rig.controller.stop_transaction("tx-fits").ok
    rig.clock.advance(48 * 3600 - SESSION_SYNC_MARGIN.total_seconds() - 30 * 3600)
    refused = rig.controller.start_transaction(transaction_request(request("tx-late")))
    assert not refused.ok
    assert "time sync expires at 2026-11-24T10:00:00.000Z" in refused.error
    assert "the next is tried at" in refused.error
    assert rig.sim.device.state()["running_transaction"] is None
    # A sync that lands makes starts possible again.
    rig.clear_faults()
    assert rig.controller.start_transaction(transaction_request(request("tx-late"))).ok


def test_a_start_waits_for_the_ntp_answer_instead_of_aborting_the_sync(
    rigs: list[SocketRig], tmp_path: Path
) -> None:
    rig = make(rigs, tmp_path, ntp=True, synced=False, ntp_answer_seconds=20)
    answer = rig.controller.start_transaction(transaction_request(request("tx-1")))
    assert answer.ok, answer.error
    assert rig.sim.device.state()["running_transaction"] == "tx-1"
    events = [e["event"] for e in rig.sim.device.logbook()["entries"]]
    assert "ntpSyncAborted" not in events


# -- the settings window --------------------------------------------------------------------


def test_the_clock_written_in_the_first_two_minutes_is_written_again_to_last(
    rigs: list[SocketRig], tmp_path: Path
) -> None:
    rig = make(rigs, tmp_path, synced=False, settings_window_seconds=120)
    # Init wrote the clock inside the window: a power cycle now would lose it.
    assert rig.sim.device.state()["settings_writes"][0]["persisted"] is False
    rig.clock.advance(120)
    rig.controller.housekeeping()
    rig.sim.device.reboot()
    assert rig.sim.device.status()["status"]["bits"]["timeSyncStatusIsOk"] is True
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
