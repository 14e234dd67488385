"""Validation against the powermeter interface, with draft-7 and RFC 3339 semantics."""

from __future__ import annotations

from typing import Any

import pytest

from lem_dcbm.everest import validation

MEASUREMENT: dict[str, Any] = {
    "timestamp": "2026-11-22T10:00:00.123Z",
    "meter_id": "30000123",
    "energy_Wh_import": {"total": 1234.5},
    "energy_Wh_export": {"total": 0.0},
    "power_W": {"total": 11000.0},
    "voltage_V": {"DC": 400.0},
    "current_A": {"DC": 27.5},
    "temperatures": [
        {"temperature": 31.5, "location": "temperatureH"},
        {"temperature": 29.0, "location": "temperatureL"},
    ],
}


def test_commands_of_the_interface() -> None:
    assert set(validation.command_names()) == {"start_transaction", "stop_transaction"}


def test_a_full_dc_measurement_is_valid() -> None:
    assert validation.check_var("powermeter", MEASUREMENT) is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"timestamp": "22.11.2026 10:00"}, "is not a 'date-time'"),
        ({"timestamp": "2026-13-22T10:00:00Z"}, "is not a 'date-time'"),
        ({"voltage_V": {"DC": "400"}}, "is not of type 'number'"),
        ({"power_W": {"L1": 1.0}}, "'total' is a required property"),
        ({"temperatures": [{"location": "x"}]}, "'temperature' is a required property"),
        ({"frequency": 50}, "Additional properties are not allowed"),
    ],
)
def test_measurement_problems(change: dict[str, Any], fragment: str) -> None:
    problem = validation.check_var("powermeter", {**MEASUREMENT, **change})
    assert problem is not None
    assert fragment in problem


@pytest.mark.parametrize(
    "timestamp",
    ["2026-11-22T10:00:00Z", "2026-11-22T10:00:00.5+01:00", "2026-11-22t10:00:00z"],
)
def test_rfc3339_forms(timestamp: str) -> None:
    assert validation.check_var("powermeter", {**MEASUREMENT, "timestamp": timestamp}) is None


def test_status_beside_ref_is_a_string_not_an_object() -> None:
    # EVerest's YAML writes `type: object` beside the $ref of the status enum.
    assert validation.check_result("start_transaction", {"status": "OK"}) is None
    problem = validation.check_result("start_transaction", {"status": {"value": "OK"}})
    assert problem is not None


def test_start_result_may_carry_the_signed_begin_reading() -> None:
    signed = {"signed_meter_data": "OCMF|{}|{}", "signing_method": "", "encoding_method": "OCMF"}
    assert (
        validation.check_result("start_transaction", {"status": "OK", "signed_meter_value": signed})
        is None
    )
    assert (
        validation.check_result("stop_transaction", {"status": "OK", "signed_meter_value": {}})
        is not None
    )


def test_long_instances_are_cut_in_the_problem_text() -> None:
    problem = validation.check_arguments("stop_transaction", {"transaction_id": ["x" * 5000]})
    assert problem is not None
    assert len(problem) < 500
