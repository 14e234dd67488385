"""Validation against the powermeter interface, with draft-7 and RFC 3339 semantics."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.mark.parametrize(
    ("timestamp", "valid"),
    [
        ("2024-02-29T23:59:59Z", True),
        ("2023-02-29T10:00:00Z", False),
        ("2026-04-31T10:00:00Z", False),
        ("2026-11-22T24:00:00Z", False),
        ("2026-11-22T10:60:00Z", False),
        ("2026-11-22T10:00:60Z", False),
        ("0000-01-01T00:00:00Z", False),
    ],
)
def test_date_and_time_fields_are_checked_as_calendar_values(timestamp: str, valid: bool) -> None:
    problem = validation.check_var("powermeter", {**MEASUREMENT, "timestamp": timestamp})
    assert (problem is None) is valid


def test_checking_a_publication_does_not_load_strptime() -> None:
    # A time stamp is checked at every publication: no strptime (slow, and it loads locale
    # and calendar into a module's memory for good).
    probe = (
        "import sys\n"
        "from lem_dcbm.everest import validation\n"
        f"assert validation.check_var('powermeter', {MEASUREMENT!r}) is None\n"
        "assert validation.check_var('powermeter', "
        f"{{**{MEASUREMENT!r}, 'timestamp': '2026-02-30T10:00:00Z'}}) is not None\n"
        "print('_strptime' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


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


def test_a_var_judged_by_shape_is_checked_as_strictly_and_names_each_bad_value() -> None:
    from datetime import datetime, timezone

    from lem_dcbm.core.powermeter import powermeter_value
    from lem_dcbm.everest import validation
    from lem_dcbm.everest.shapes import powermeter_var
    from lem_dcbm.meter.models import LiveMeasure

    measure = LiveMeasure(400.0, 10.0, 4.0, 30.0, 28.0, 12.5, 0.25, "2026-11-22T10:00:00+01:00")
    now = datetime(2026, 11, 22, tzinfo=timezone.utc)
    value = powermeter_var(powermeter_value(measure, "12024072805", now))
    assert validation.check_var("powermeter", value) is None
    assert (
        validation.check_var("powermeter", {**value, "timestamp": "2026-11-22T11:00:00Z"}) is None
    )
    first = validation.check_var("powermeter", {**value, "timestamp": "2026-13-45T99:00:00Z"})
    second = validation.check_var("powermeter", {**value, "timestamp": "yesterday"})
    assert first is not None
    assert "2026-13-45T99:00:00Z" in first
    assert second is not None
    assert "yesterday" in second
    wrong_type = validation.check_var("powermeter", {**value, "power_W": {"total": "x"}})
    assert wrong_type is not None
    assert "is not of type 'number'" in wrong_type
    extra = validation.check_var("powermeter", {**value, "extra": 1})
    assert extra is not None
    assert "Additional properties" in extra
    # The OCMF key var is judged by value (it has value keywords) or, if not, still checked.
    assert validation.check_var("public_key_ocmf", 5) is not None


@pytest.mark.parametrize(
    "moment",
    [
        "2026-12-05T08:15:50.000Z",
        "2026-12-05t08:15:50.5z",
        "2026-12-05T08:15:50+01:00",
        "2026-12-05T08:15:50.123456789-05:30",
    ],
)
def test_every_rfc3339_time_is_a_date_time_on_every_python(moment: str) -> None:
    # Python 3.10's fromisoformat refused "Z" and odd fractions: on 3.10 every
    # powermeter publication (timestamp "...000Z") was withheld as breaking the interface.
    from lem_dcbm.everest.validation import format_checker

    assert format_checker().conforms(moment, "date-time")


@pytest.mark.parametrize(
    "moment", ["2026-13-05T08:15:50Z", "2026-12-05T25:15:50Z", "2026-12-05T08:15:50+24:00"]
)
def test_an_impossible_time_is_not_a_date_time(moment: str) -> None:
    from lem_dcbm.everest.validation import format_checker

    assert not format_checker().conforms(moment, "date-time")
