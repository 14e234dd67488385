"""A start or an empty stop ends only a transaction that is provably this module's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import FOREIGN_CHECK_S, ControllerSettings, MeterController
from lem_dcbm.core.ownership import RunningTransaction, why_not_ours
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal
from tests.support.fake_meter import FakeMeter

EVSE = "DE*PNX*E1"
REQUEST: dict[str, Any] = {
    "evse_id": EVSE,
    "transaction_id": "tx-1",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": [],
    "identification_data": "04A1B2C3",
}


@dataclass
class Owners:
    """The meter claims as a test sets them, and the foreign-transaction condition."""

    other: tuple[str, ...] = ()
    claimed: list[str] = field(default_factory=list)
    raised: list[str | None] = field(default_factory=list)

    def claim(self, meter_id: str) -> None:
        self.claimed.append(meter_id)

    def others(self) -> tuple[str, ...]:
        return self.other

    def foreign_transaction(self, message: str | None) -> None:
        self.raised.append(message)


def controller(
    meter: FakeMeter, journal_dir: Path, owners: Owners | None = None
) -> tuple[MeterController, ManualClock]:
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    made = MeterController(
        meter,
        ControllerSettings(start=StartSettings(tariff_id=0, cable_id=0), transaction_retries=1),
        clock,
        TimeSync(meter, clock, timezone="+00:00", dst={}),
        records=RecordBook(TransactionJournal(journal_dir)),
        owners=owners,
    )
    made.initialize()
    return made, clock


def started_elsewhere(meter: FakeMeter, transaction_id: str, evse_id: str, client_id: str) -> None:
    """Another module (or tool) starts a transaction at the shared meter."""
    meter.start_transaction(
        {
            "evseId": evse_id,
            "transactionId": transaction_id,
            "clientId": client_id,
            "tariffId": 0,
            "cableId": 0,
            "userData": "",
        }
    )


def test_claim_is_made_at_init_with_the_meter_serial(tmp_path: Path) -> None:
    owners = Owners()
    controller(FakeMeter(), tmp_path, owners)
    assert owners.claimed == ["12024072805"]


def test_start_never_stops_another_evses_transaction(tmp_path: Path) -> None:
    meter = FakeMeter()
    started_elsewhere(meter, "tx-A", "DE*PNX*E2", "04FFFFFF,tx-A")
    owners = Owners()
    made, clock = controller(meter, tmp_path, owners)
    answer = made.start_transaction(transaction_request(REQUEST))
    assert not answer.ok
    assert "transaction tx-A (evseId 'DE*PNX*E2', clientId '04FFFFFF,tx-A')" in answer.error
    assert "lem-dcbm meter stop-foreign --transaction-id tx-A" in answer.error
    assert meter.running_id == "tx-A"
    assert "stop_transaction" not in meter.calls
    assert owners.raised == [answer.error.split(": ", 1)[1]]
    # Nor does EvseManager's boot-time clean-up (a stop without id).
    cleanup = made.stop_transaction("")
    assert not cleanup.ok
    assert "tx-A" in cleanup.error
    assert meter.running_id == "tx-A"
    # Its owner stops it: the condition clears at the next look.
    meter.stop_transaction("tx-A")
    clock.advance(FOREIGN_CHECK_S)
    made.housekeeping()
    assert owners.raised[-1] is None
    assert made.start_transaction(transaction_request(REQUEST)).ok


def test_own_transaction_left_running_is_stopped_and_kept(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path)
    assert first.start_transaction(transaction_request({**REQUEST, "transaction_id": "tx-old"})).ok
    second, _ = controller(meter, tmp_path, Owners(other=("pm_other",)))
    assert second.start_transaction(
        transaction_request(REQUEST)
    ).ok  # the journal holds tx-old: it is ours
    assert "tx-old" in meter.ended
    assert meter.running_id == "tx-1"
    kept = TransactionJournal(tmp_path).get("tx-old")
    assert kept is not None
    assert kept.has_record


def test_boot_time_stop_without_id_ends_own_transaction(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path)
    first.start_transaction(transaction_request(REQUEST))
    second, _ = controller(meter, tmp_path)
    answer = second.stop_transaction("")
    assert answer.ok
    assert "tx-1" in answer.record.ocmf


def test_journal_lost_same_evse_is_stopped_by_the_next_start(tmp_path: Path) -> None:
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path / "lost")
    first.start_transaction(transaction_request({**REQUEST, "transaction_id": "tx-old"}))
    made, _ = controller(meter, tmp_path / "new-disk")
    assert made.start_transaction(transaction_request(REQUEST)).ok
    assert "tx-old" in meter.ended


def test_journal_lost_stop_by_name_still_answers(tmp_path: Path) -> None:
    """EvseManager's boot-time stop(remembered id) after the disk was replaced."""
    meter = FakeMeter()
    first, _ = controller(meter, tmp_path / "lost")
    first.start_transaction(transaction_request(REQUEST))
    made, _ = controller(meter, tmp_path / "new-disk", Owners(other=("pm_other",)))
    answer = made.stop_transaction("tx-1")
    assert answer.ok
    assert "tx-1" in answer.record.ocmf


def test_same_evse_is_not_proof_while_another_module_claims_the_meter(tmp_path: Path) -> None:
    meter = FakeMeter()
    started_elsewhere(meter, "tx-B", EVSE, "04A1B2C3,tx-B")
    owners = Owners(other=("pm_b",))
    made, _ = controller(meter, tmp_path, owners)
    answer = made.start_transaction(transaction_request(REQUEST))
    assert not answer.ok
    assert "module(s) pm_b also claim this meter" in answer.error
    assert meter.running_id == "tx-B"


@pytest.mark.parametrize(
    ("running", "held", "evse", "verdict"),
    [
        (RunningTransaction("t", EVSE, "x,t"), {}, EVSE, None),
        (RunningTransaction("t", "E9", "x,t"), {"evse_id": "E9"}, EVSE, None),
        (RunningTransaction("t", "E9", "x,t"), {"evse_id": EVSE}, EVSE, "started for EVSE"),
        (RunningTransaction("t", EVSE, "x,t"), None, EVSE, None),
        (RunningTransaction("t", "", "x,t"), None, "", "started for EVSE ''"),
        (RunningTransaction("t", EVSE, "x,t"), None, None, "names no EVSE"),
        (RunningTransaction("t", None, None), None, EVSE, "does not say its EVSE"),
        (RunningTransaction("t", EVSE, "card"), None, EVSE, "clientId is not of the form"),
        (RunningTransaction("t", EVSE, "c" * 37), None, EVSE, None),
    ],
)
def test_why_not_ours(
    running: RunningTransaction, held: dict[str, Any] | None, evse: str | None, verdict: str | None
) -> None:
    reason = why_not_ours(running, held=held, evse_id=evse, other_modules=())
    if verdict is None:
        assert reason is None
    else:
        assert reason is not None
        assert verdict in reason
