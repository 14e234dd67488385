"""Fault injection rules: validation, matching by path and method, count and duration."""

from __future__ import annotations

from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.simulator.faults import FaultBoard, Faults, parse_faults
from lem_dcbm.simulator.refusals import FieldError


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def board(clock: ManualClock) -> FaultBoard:
    return FaultBoard(clock.monotonic)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"methods": "POST"}, "methods"),
        ({"methods": ["post"]}, "methods"),
        ({"methods": ["PATCH"]}, "methods"),
        ({"methods": [""]}, "methods"),
        ({"for_ms": 0}, "for_ms"),
        ({"for_ms": -5}, "for_ms"),
        ({"for_ms": 1.5}, "for_ms"),
        ({"for_ms": True}, "for_ms"),
        ({"ocmf_of": ""}, "ocmf_of"),
        ({"ocmf_of": 7}, "ocmf_of"),
        ({"count": 0}, "count"),
        ({"paths": "/v1"}, "paths"),
        ({"colour": 1}, "colour"),
        ({"drip_ms": -1}, "drip_ms"),
        ({"drip_ms": 0.5}, "drip_ms"),
        ({"truncate_body": 1}, "truncate_body"),
    ],
)
def test_a_bad_field_is_refused_by_name(body: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as refused:
        parse_faults(body)
    assert refused.value.field == field


def test_new_fields_parse() -> None:
    faults = parse_faults({"methods": ["POST", "PUT"], "for_ms": 250, "ocmf_of": "tx-1"})
    assert faults == Faults(methods=("POST", "PUT"), for_ms=250, ocmf_of="tx-1")
    slow = parse_faults({"drip_ms": 100, "truncate_body": True})
    assert slow == Faults(drip_ms=100, truncate_body=True)
    assert not slow.replaces_answer  # the meter's own answer, badly delivered


def test_methods_limit_the_fault(board: FaultBoard) -> None:
    board.set(parse_faults({"http_status": 503, "paths": ["/v1/legal"], "methods": ["POST"]}))
    assert board.take("GET", "/v1/legal") is None
    assert board.take("PUT", "/v1/legal?transactionId=a") is None
    taken = board.take("POST", "/v1/legal")
    assert taken is not None
    assert taken.http_status == 503
    assert board.take("POST", "/v1/status") is None
    assert board.applied == 1


def test_no_methods_means_every_method(board: FaultBoard) -> None:
    board.set(parse_faults({"http_status": 500}))
    assert all(board.take(m, "/v1/status") is not None for m in ("GET", "PUT", "DELETE"))


def test_for_ms_clears_the_fault_when_its_time_is_up(board: FaultBoard, clock: ManualClock) -> None:
    board.set(parse_faults({"http_status": 503, "for_ms": 1000}))
    clock.advance(0.4)
    assert board.take("GET", "/v1/status") is not None
    described = board.describe()
    assert described is not None
    assert described["for_ms"] == 1000
    assert described["remaining_ms"] == 600
    clock.advance(0.6)
    assert board.take("GET", "/v1/status") is None
    assert board.describe() is None


def test_for_ms_and_count_end_at_whichever_comes_first(
    board: FaultBoard, clock: ManualClock
) -> None:
    board.set(parse_faults({"http_status": 503, "for_ms": 1000, "count": 2}))
    assert board.take("GET", "/v1/status") is not None
    assert board.take("GET", "/v1/status") is not None
    assert board.take("GET", "/v1/status") is None
    board.set(parse_faults({"http_status": 503, "for_ms": 1000, "count": 5}))
    assert board.take("GET", "/v1/status") is not None
    clock.advance(1.0)
    assert board.take("GET", "/v1/status") is None


def test_setting_again_restarts_the_duration(board: FaultBoard, clock: ManualClock) -> None:
    board.set(parse_faults({"latency_ms": 10, "for_ms": 500}))
    clock.advance(0.4)
    board.set(parse_faults({"latency_ms": 10, "for_ms": 500}))
    clock.advance(0.4)
    assert board.take("GET", "/v1/status") is not None
    board.clear()
    assert board.take("GET", "/v1/status") is None


@pytest.mark.parametrize(
    ("method", "path", "affected"),
    [
        ("GET", "/v1/ocmf", True),
        ("GET", "/v2/ocmf?transactionId=tx-9", True),
        ("GET", "/v1/ocmf/-1", True),
        ("HEAD", "/v1/ocmf", True),
        ("GET", "/v1/ocmfx", False),
        ("GET", "/v1/status", False),
        ("GET", "/v1/legal", False),
        ("POST", "/v1/ocmf", False),
    ],
)
def test_ocmf_of_applies_to_ocmf_reads_only(
    board: FaultBoard, method: str, path: str, affected: bool
) -> None:
    board.set(parse_faults({"ocmf_of": "tx-1"}))
    assert (board.take(method, path) is not None) is affected
