"""What a crash leaves in the journal is settled once after the restart.

Found by ``bench/endurance.py sessions``: a module killed after it wrote
``start_requested`` but before the meter ran the start left a transaction that every
later run took as stopped-while-away and tried to fetch the record of, every few
minutes for ever, though the meter never held one; and a module killed between keeping
a late record and publishing it never published it (the record was in the journal, but
not on the bill).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.records.late_record import KeptRecord
from tests.support.faulty_transport import Rule
from tests.support.record_rig import LateRoad, Rig, request


def test_a_start_the_meter_never_ran_is_not_fetched_for_ever(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    # The module died right after the journal write that comes before the POST.
    TransactionJournal(rig.journal_dir).record("tx-ghost", "start_requested", evse_id="E1")
    rig.restart()
    assert rig.controller.pending_records == ["tx-ghost"]
    rig.clock.advance(1)
    rig.controller.housekeeping()
    assert rig.controller.pending_records == []
    assert rig.late.published == []
    # Settled for good: the next run does not take it up again.
    rig.restart()
    assert rig.controller.pending_records == []
    entry = TransactionJournal(rig.journal_dir).get("tx-ghost")
    assert entry is not None
    assert entry.data["not_started_at_meter"] is True


def test_a_start_the_meter_did_run_is_still_fetched(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    rig.charge()
    # The module died after the meter stopped it, before the journal heard of the stop.
    rig.device.stop_transaction("tx-1", {"running": False})
    rig.restart()
    rig.clock.advance(1)
    rig.controller.housekeeping()
    # Fetched and kept, not published on its own: under the manager EvseManager's
    # start-up recovery stop asks for it, gets it, and so does the late road, marked.
    assert rig.late.published == []
    stopped = rig.controller.stop_transaction("tx-1")
    assert stopped.record is not None
    assert stopped.record.ocmf == rig.record_at_meter("tx-1")
    assert [r.transaction_id for r in rig.late.published] == ["tx-1"]
    assert rig.late.published[0].ocmf == rig.record_at_meter("tx-1")
    assert rig.late.published[0].answered


class Died(BaseException):
    """The module process dies here."""


def late_record_due(tmp_path: Path) -> Rig:
    """tx-1's stop answered without its record, which the next housekeeping fetches."""
    rig = Rig(tmp_path)
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    rig.charge()
    rig.transport.add(
        Rule("GET", "/v1/ocmf", "status", status=500, until=rig.clock.monotonic() + 60)
    )
    assert not rig.controller.stop_transaction("tx-1").ok  # the record goes the late road
    rig.clock.advance(120)
    return rig


def test_a_late_record_the_module_died_before_publishing_goes_out_after_the_restart(
    tmp_path: Path,
) -> None:
    rig = late_record_due(tmp_path)

    def die(record: KeptRecord) -> bool:
        raise Died

    rig.late.publish = die  # type: ignore[method-assign]
    # The record is fetched and kept, and the module dies before it is published.
    with pytest.raises(Died):
        rig.controller.housekeeping()
    rig.late = LateRoad()
    rig.restart()
    rig.controller.housekeeping()
    assert [r.transaction_id for r in rig.late.published] == ["tx-1"]
    assert rig.late.published[0].ocmf == rig.record_at_meter("tx-1")
    rig.restart()
    rig.controller.housekeeping()
    assert len(rig.late.published) == 1


def test_a_late_record_published_as_the_module_died_goes_out_once_more_after_the_restart(
    tmp_path: Path,
) -> None:
    # The crash of the four duplicates of bench/endurance.py sessions (stop_minimum_wait_ms
    # 105000, seed 2027): published, then killed before the journal noted the publication.
    rig = late_record_due(tmp_path)
    first = rig.late

    def publish_and_die(record: KeptRecord) -> bool:
        first.published.append(record)
        raise Died

    first.publish = publish_and_die  # type: ignore[method-assign]
    with pytest.raises(Died):
        rig.controller.housekeeping()
    assert [r.transaction_id for r in first.published] == ["tx-1"]
    rig.late = LateRoad()
    rig.restart()
    rig.controller.housekeeping()
    # The journal cannot show that the first copy left (a killed process's MQTT queue is
    # gone with it): the record goes once more, the same record, for a backend to drop by
    # meter id and record number if it has it.
    assert [r.ocmf for r in rig.late.published] == [rig.record_at_meter("tx-1")]
    assert rig.late.published[0].ocmf == first.published[0].ocmf
    assert rig.late.published[0].meter_id == first.published[0].meter_id
    rig.restart()
    rig.controller.housekeeping()
    assert len(rig.late.published) == 1
