"""Every signed record reaches the bill: the controller against a meter that misbehaves.

The simulated meter runs in process behind the real client, with one manual clock for
both; ``FaultyTransport`` loses answers the way embedded devices do. Each test counts the
transactions the meter really ran and the records the controller handed out.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.core.results import StopResult
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from tests.support.faulty_transport import Rule
from tests.support.record_rig import WAIT_S, Rig, request


def record_of(answer: StopResult) -> str:
    assert answer.ok, answer
    assert answer.record is not None
    return answer.record.ocmf


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def run(rig: Rig, transaction_id: str) -> str:
    """A whole transaction; the record returned by the stop."""
    assert rig.controller.start_transaction(transaction_request(request(transaction_id))).ok
    rig.charge()
    return record_of(rig.controller.stop_transaction(transaction_id))


# -- the stop waits for the record, bounded ------------------------------------------------


def test_record_failing_for_3_s_after_the_stop_is_waited_for(rig: Rig) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    stop_at = rig.clock.monotonic()
    rig.transport.add(Rule("GET", "/v1/ocmf", "status", status=500, until=stop_at + 3.0))
    answer = rig.controller.stop_transaction("tx-1")
    record = record_of(answer)
    assert record == rig.record_at_meter("tx-1")
    assert verify_ocmf(record, rig.device.status()["publicKeyOcmf"])
    assert 3.0 <= rig.clock.monotonic() - stop_at <= WAIT_S
    assert rig.late.published == []


def test_record_missing_past_the_budget_goes_the_late_road(rig: Rig) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    stop_at = rig.clock.monotonic()
    rig.transport.add(Rule("GET", "/v1/ocmf", "reset", until=stop_at + 60.0))
    answer = rig.controller.stop_transaction("tx-1")
    assert not answer.ok
    assert "records/tx-1" in answer.error
    assert "10 s" in answer.error
    assert rig.clock.monotonic() - stop_at <= WAIT_S
    assert rig.device.state()["running_transaction"] is None
    # The background fetch gets it once the meter answers again, and publishes it.
    while rig.clock.monotonic() < stop_at + 400 and not rig.late.published:
        rig.clock.advance(5)
        rig.controller.housekeeping()
    [late] = rig.late.published
    assert late.transaction_id == "tx-1"
    assert late.ocmf == rig.record_at_meter("tx-1")
    assert late.signature_valid is True
    assert late.failed_checks == ()
    entry = TransactionJournal(rig.journal_dir).get("tx-1")
    assert entry is not None
    assert entry.ocmf == late.ocmf
    assert entry.data["late"] is True
    assert "late_published_at" in entry.data


# -- a kept record answers only after the meter was asked -----------------------------------


def test_reused_id_gets_the_new_sessions_record(rig: Rig) -> None:
    first = run(rig, "tx-1")
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    rig.charge()
    second = record_of(rig.controller.stop_transaction("tx-1"))
    assert second != first
    assert rig.device.state()["running_transaction"] is None
    assert second == rig.record_at_meter("tx-1")
    assert parse_ocmf(second).payload["PG"] == "T2"
    # The first session stays in the journal under an archive name.
    kept = [e.ocmf for e in TransactionJournal(rig.journal_dir).entries()]
    assert first in kept
    assert second in kept


def test_repeated_stop_is_answered_from_the_meter(rig: Rig) -> None:
    record = run(rig, "tx-1")
    calls = len(rig.transport.calls)
    assert record_of(rig.controller.stop_transaction("tx-1")) == record
    assert ("GET", "/v1/ocmf?transactionId=tx-1") in rig.transport.calls[calls:]


def test_foreign_record_is_never_billed(rig: Rig) -> None:
    run(rig, "tx-1")
    rig.controller.start_transaction(transaction_request(request("tx-2")))
    rig.charge()
    stop_at = rig.clock.monotonic()
    rig.transport.add(Rule("GET", "/v1/ocmf", "ocmf_of", ocmf_of="tx-1", until=stop_at + 60))
    answer = rig.controller.stop_transaction("tx-2")
    assert not answer.ok
    assert "another transaction" in answer.error
    while rig.clock.monotonic() < stop_at + 400 and not rig.late.published:
        rig.clock.advance(5)
        rig.controller.housekeeping()
    [late] = rig.late.published
    assert late.ocmf == rig.record_at_meter("tx-2")
    assert TransactionJournal(rig.journal_dir).get("tx-2").ocmf == late.ocmf  # type: ignore[union-attr]


def test_clock_set_back_during_a_transaction_is_named(rig: Rig) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    rig.device.set_clock_offset(-365 * 24 * 3600.0)
    record = record_of(rig.controller.stop_transaction("tx-1"))
    assert record == rig.record_at_meter("tx-1")
    assert "order" in rig.alerts.active["OcmfCheckFailed"]
    entry = TransactionJournal(rig.journal_dir).get("tx-1")
    assert entry is not None
    assert [c["check"] for c in entry.data["verdict"]["failed_checks"]] == ["order"]


def test_tampered_record_is_replaced_once_the_meter_recovered(rig: Rig) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    # The record is served tampered to the first fetch and to the one more that follows.
    rig.transport.add(Rule("GET", "/v1/ocmf", "tamper", count=2))
    first = record_of(rig.controller.stop_transaction("tx-1"))
    assert first != rig.record_at_meter("tx-1")
    assert "OcmfSignatureInvalid" in rig.alerts.active
    # The meter recovered: a later stop asks it and gets the verifying record.
    second = record_of(rig.controller.stop_transaction("tx-1"))
    assert second == rig.record_at_meter("tx-1")
    assert "OcmfSignatureInvalid" not in rig.alerts.active
    entry = TransactionJournal(rig.journal_dir).get("tx-1")
    assert entry is not None
    assert entry.ocmf == second
    assert entry.data["verdict"]["signature_valid"] is True


# -- lost answers are settled by asking the meter ------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        Rule("PUT", "/v1/legal", "reset", after=True, count=1),
        Rule("PUT", "/v1/legal", "status", status=500, after=True, count=1),
        Rule("PUT", "/v1/legal", "malformed", after=True, count=1),
        Rule("PUT", "/v1/legal", "timeout", after=True),
    ],
    ids=["reset", "500", "malformed", "timeout-every-attempt"],
)
def test_stop_whose_answer_was_lost_gets_its_record(rig: Rig, rule: Rule) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    rig.transport.add(rule)
    record = record_of(rig.controller.stop_transaction("tx-1"))
    assert record == rig.record_at_meter("tx-1")
    assert rig.ids_at_meter() == ["tx-1"]


@pytest.mark.parametrize(
    "rule",
    [
        Rule("POST", "/v1/legal", "reset", after=True, count=1),
        Rule("POST", "/v1/legal", "status", status=500, after=True, count=1),
        Rule("POST", "/v1/legal", "malformed", after=True, count=1),
        Rule("POST", "/v1/legal", "timeout", after=True, count=1),
        Rule("POST", "/v1/legal", "status", status=503, count=1),
        Rule("POST", "/v1/legal", "reset", count=1),
    ],
    ids=["reset-after", "500-after", "malformed-after", "timeout-after", "503", "reset-before"],
)
def test_start_whose_answer_was_lost_runs_exactly_once(rig: Rig, rule: Rule) -> None:
    rig.transport.add(rule)
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    assert rig.device.state()["running_transaction"] == "tx-1"
    assert rig.ids_at_meter() == ["tx-1"]
    posts = [c for c in rig.transport.calls if c[0] == "POST"]
    assert len(posts) == (1 if rule.after else 2)


def test_one_failed_status_read_does_not_fail_the_stop(rig: Rig) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    rig.transport.add(Rule("GET", "/v1/status", "reset", count=1))
    record = record_of(rig.controller.stop_transaction("tx-1"))
    assert record == rig.record_at_meter("tx-1")


def test_unknown_id_is_answered_with_one_record_request(rig: Rig) -> None:
    run(rig, "tx-1")
    calls = len(rig.transport.calls)
    started = rig.clock.monotonic()
    answer = rig.controller.stop_transaction("never-started")
    assert not answer.ok
    assert "neither the meter nor the journal" in answer.error
    asked = [c for c in rig.transport.calls[calls:] if c[1].startswith("/v1/ocmf")]
    assert len(asked) == 1
    assert rig.clock.monotonic() == started  # no retry pauses


def test_remembered_id_unknown_to_the_journal_gets_the_meters_record(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    record = run(rig, "tx-1")
    for path in rig.journal_dir.glob("tx-*.json"):
        path.unlink()  # a module whose journal was lost
    rig.restart()
    assert record_of(rig.controller.stop_transaction("tx-1")) == record


# -- duplicates and races ------------------------------------------------------------------


def test_start_retried_by_the_caller_after_a_lost_answer(rig: Rig) -> None:
    rig.transport.add(Rule("POST", "/v1/legal", "reset", after=True, count=1))
    rig.transport.add(Rule("GET", "/v1/status", "reset", count=10))
    first = rig.controller.start_transaction(transaction_request(request("tx-1")))
    assert not first.ok  # the meter could not be asked
    rig.transport.rules.clear()
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    rig.charge()
    record_of(rig.controller.stop_transaction("tx-1"))
    assert rig.ids_at_meter() == ["tx-1"]


def test_stop_arriving_while_its_start_still_runs(rig: Rig) -> None:
    gate = rig.transport.add(Rule("POST", "/v1/legal", "gate", count=1))
    answers: dict[str, dict[str, Any]] = {}
    start = threading.Thread(
        target=lambda: answers.setdefault(
            "start", rig.controller.start_transaction(transaction_request(request("a")))
        )
    )
    stop = threading.Thread(
        target=lambda: answers.setdefault("stop", rig.controller.stop_transaction("a"))
    )
    start.start()
    assert gate.entered.wait(5)
    stop.start()
    gate.release.set()
    start.join(10)
    stop.join(10)
    assert answers["start"].ok
    assert record_of(answers["stop"]) == rig.record_at_meter("a")
    assert rig.ids_at_meter() == ["a"]
    assert rig.device.state()["running_transaction"] is None


def test_two_stops_for_the_same_id_at_once(rig: Rig) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    answers: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(rig.controller.stop_transaction("tx-1")))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [record_of(a) for a in answers] == [rig.record_at_meter("tx-1")] * 2
    assert rig.ids_at_meter() == ["tx-1"]


def test_remembered_stop_after_restart_while_the_record_is_fetched(rig: Rig) -> None:
    rig.controller.start_transaction(transaction_request(request("tx-1")))
    rig.charge()
    rig.transport.add(Rule("GET", "/v1/ocmf", "reset", until=rig.clock.monotonic() + 30))
    assert not rig.controller.stop_transaction("tx-1").ok
    rig.clock.advance(30)
    restarted = rig.restart()
    gate = rig.transport.add(Rule("GET", "/v1/ocmf", "gate", count=1))
    background = threading.Thread(target=restarted.housekeeping)
    background.start()
    assert gate.entered.wait(5)
    answers: list[dict[str, Any]] = []
    stop = threading.Thread(target=lambda: answers.append(restarted.stop_transaction("tx-1")))
    stop.start()
    gate.release.set()
    background.join(10)
    stop.join(10)
    record = rig.record_at_meter("tx-1")
    assert record_of(answers[0]) == record
    assert [p.ocmf for p in rig.late.published] == [record]
    assert rig.ids_at_meter() == ["tx-1"]
