"""The simulator's fault board: methods, paths, count and a time limit on one clock."""

from __future__ import annotations

from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.simulator.faults import FaultBoard, parse_faults
from lem_dcbm.simulator.refusals import FieldError


def board(clock: ManualClock, **body: Any) -> FaultBoard:
    faults = FaultBoard(clock.monotonic)
    faults.set(parse_faults(body))
    return faults


def test_methods_narrow_the_faults_to_those_methods() -> None:
    faults = board(ManualClock(), http_status=503, paths=["/v1/legal"], methods=["post"])
    assert faults.take("GET", "/v1/legal") is None
    taken = faults.take("POST", "/v1/legal")
    assert taken is not None
    assert taken.http_status == 503


def test_for_ms_clears_the_faults_once_that_time_has_passed() -> None:
    clock = ManualClock()
    faults = board(clock, http_status=500, paths=["/v1/ocmf"], for_ms=3000)
    assert faults.take("GET", "/v1/ocmf?transactionId=a") is not None
    clock.advance(2.999)
    assert faults.take("GET", "/v1/ocmf") is not None
    clock.advance(0.001)
    assert faults.take("GET", "/v1/ocmf") is None
    assert faults.describe() is None


def test_count_and_for_ms_end_whichever_comes_first() -> None:
    clock = ManualClock()
    faults = board(clock, reset_connection=True, count=1, for_ms=60000)
    assert faults.take("GET", "/v1/status") is not None
    assert faults.take("GET", "/v1/status") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"methods": "POST"}, "methods"),
        ({"methods": [""]}, "methods"),
        ({"for_ms": 0}, "for_ms"),
        ({"for_ms": True}, "for_ms"),
        ({"ocmf_of": ""}, "ocmf_of"),
        ({"ocmf_of": 5}, "ocmf_of"),
    ],
)
def test_bad_fault_fields_are_refused_by_name(body: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as refused:
        parse_faults(body)
    assert refused.value.field == field
