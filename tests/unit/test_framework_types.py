"""Answers fit the powermeter types of every EVerest release in the field.

The types of EVerest 2025.12.0, 2026.02.1 and main are kept as fixtures
(``tests/fixtures/everest-types/<release>/``, see each SOURCE). Every answer the module
builds (start, stop, the 1 Hz beat) is shaped by a release's types as the module shapes
it by the types its manager publishes, then validated with that release's schema as the
framework does with ``validate_schema`` on (``additionalProperties: false`` rejects).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from lem_dcbm.core.powermeter import powermeter_value
from lem_dcbm.core.results import SignedRecord, StartResult, StopResult
from lem_dcbm.everest import results
from lem_dcbm.everest.framework_types import (
    TYPE_FILES,
    FrameworkTypes,
    derive,
    schema_from_types,
)
from lem_dcbm.everest.shapes import powermeter_var
from lem_dcbm.everest.validation import format_checker, own_schema
from lem_dcbm.meter.models import LiveMeasure

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "everest-types"
#: The retained type definitions a 2026 manager published (cut from a recorded run).
TRANSCRIPT = FIXTURES.parent / "transcripts" / "everest-2026-aa8113f-type-definitions.txt"
RELEASES = ("2025.12.0", "2026.02.1", "main")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
RECORD = SignedRecord('OCMF|{"FV":"1.0","PG":"T1"}|{"SD":"00"}', "3059AB")


def release_types(release: str) -> dict[str, dict[str, Any]]:
    """``{file name: {TypeName: schema}}`` of a release, as its manager publishes them."""
    return {
        name: yaml.safe_load((FIXTURES / release / f"{name}.yaml").read_text())["types"]
        for name in TYPE_FILES
    }


def release_validator(release: str, type_name: str) -> Draft7Validator:
    """The framework's check of one powermeter type: refs resolved in the release's files."""
    definitions = {name: derive(body) for name, body in release_types(release).items()}
    document = {"$ref": f"#/definitions/powermeter/{type_name}", "definitions": definitions}
    return Draft7Validator(document, format_checker=format_checker())


def answers() -> list[tuple[str, str, dict[str, Any]]]:
    """(command or var, type name, answer) for every kind of answer the module builds."""
    window = {
        "min_stop_time": NOW + timedelta(minutes=2),
        "max_stop_time": NOW + timedelta(hours=47),
    }
    measure = LiveMeasure(400.0, 10.0, 4.0, 30.0, 28.0, 12.5, 0.25, "2026-11-22T10:00:00+01:00")
    return [
        ("start_transaction", "TransactionStartResponse", results.start_response(
            StartResult(**window, begin_record=RECORD))),
        ("start_transaction", "TransactionStartResponse", results.start_response(
            StartResult(**window))),
        ("start_transaction", "TransactionStartResponse", results.start_response(
            StartResult(error="the meter refused the start"))),
        ("stop_transaction", "TransactionStopResponse", results.stop_response(
            StopResult(record=RECORD))),
        ("stop_transaction", "TransactionStopResponse", results.stop_response(
            StopResult(error="no record within 30 s"))),
        ("powermeter", "Powermeter", powermeter_var(
            powermeter_value(measure, "12024072805", NOW))),
    ]  # fmt: skip


@pytest.mark.parametrize("release", RELEASES)
def test_no_answer_fails_the_schema_of_the_release(release: str) -> None:
    schema = schema_from_types(release_types(release), f"EVerest {release}")
    for name, type_name, answer in answers():
        if name == "powermeter":
            shaped, _ = schema.shape_var(name, answer)
        else:
            shaped, _ = schema.shape_result(name, answer)
        errors = [e.message for e in release_validator(release, type_name).iter_errors(shaped)]
        assert errors == [], (release, name, shaped)
        # What the module checks before it sends agrees with the framework.
        if name == "powermeter":
            assert schema.check_var(name, shaped) is None
        else:
            assert schema.check_result(name, shaped) is None


@pytest.mark.parametrize(
    ("release", "keeps_begin_record"),
    [("2025.12.0", False), ("2026.02.1", False), ("main", True)],
)
def test_the_begin_record_goes_only_where_the_release_has_a_place_for_it(
    release: str, keeps_begin_record: bool
) -> None:
    schema = schema_from_types(release_types(release), f"EVerest {release}")
    answer = results.start_response(
        StartResult(min_stop_time=NOW, max_stop_time=NOW + timedelta(hours=1), begin_record=RECORD)
    )
    shaped, dropped = schema.shape_result("start_transaction", answer)
    assert ("signed_meter_value" in shaped) is keeps_begin_record
    assert dropped == ([] if keeps_begin_record else ["/signed_meter_value"])
    assert shaped["status"] == "OK"
    assert shaped["transaction_max_stop_time"] == answer["transaction_max_stop_time"]
    # Unshaped, the start answer is exactly what such a release refuses.
    refused = list(release_validator(release, "TransactionStartResponse").iter_errors(answer))
    assert (refused == []) is keeps_begin_record
    # The stop keeps its record on every release.
    stop = results.stop_response(StopResult(record=RECORD))
    assert schema.shape_result("stop_transaction", stop) == (stop, [])


def test_standalone_the_module_keeps_to_its_own_schema() -> None:
    types = FrameworkTypes()
    assert types.schema() is own_schema()
    assert not types.published
    # The manager's clean-up (an empty retained payload) changes nothing.
    types.receive("powermeter", b"")
    assert types.schema() is own_schema()


def transcript_payload(topic: str) -> bytes:
    for line in TRANSCRIPT.read_text(encoding="utf-8").splitlines():
        found, _, payload = line.partition(" ")
        if found == topic and payload.startswith("{"):
            return payload.encode()
    raise AssertionError(f"{topic} not in the transcript")


def test_the_types_a_2026_manager_published_are_used_for_answers() -> None:
    types = FrameworkTypes()
    for name in TYPE_FILES:
        types.receive(name, transcript_payload(f"everest/type_definitions/{name}"))
    assert types.published
    schema = types.schema()
    assert schema is not own_schema()
    # That build (main of 2026-08-21) takes the begin record with the start answer.
    answer = results.start_response(
        StartResult(min_stop_time=NOW, max_stop_time=NOW, begin_record=RECORD)
    )
    assert schema.shape_result("start_transaction", answer) == (answer, [])
    # The published definitions are the fixture's, description aside.
    published = json.loads(transcript_payload("everest/type_definitions/powermeter"))["data"]
    assert derive(published) == derive(release_types("main")["powermeter"])
    # A later file (e.g. 2026.02.1's) replaces the schema in use.
    older = release_types("2026.02.1")["powermeter"]
    types.receive(
        "powermeter",
        json.dumps({"msg_type": "ConfigurationResponse", "data": older}).encode(),
    )
    shaped, dropped = types.schema().shape_result("start_transaction", answer)
    assert dropped == ["/signed_meter_value"]
    assert "signed_meter_value" not in shaped


def test_forbidden_properties_go_at_any_depth_and_in_lists() -> None:
    schema = schema_from_types(release_types("main"), "EVerest main")
    measure = LiveMeasure(400.0, 10.0, 4.0, 30.0, 28.0, 12.5, 0.25, "2026-11-22T10:00:00+01:00")
    value = powermeter_var(powermeter_value(measure, "12024072805", NOW))
    extra = {
        **value,
        "energy_Wh_import": {**value["energy_Wh_import"], "phase": 1},
        "temperatures": [{"temperature": 30.0, "location": "H", "colour": "red"}],
        "vendor": "x",
    }
    shaped, dropped = schema.shape_var("powermeter", extra)
    assert sorted(dropped) == ["/energy_Wh_import/phase", "/temperatures/0/colour", "/vendor"]
    assert shaped["temperatures"] == [{"temperature": 30.0, "location": "H"}]
    assert schema.check_var("powermeter", shaped) is None
    # Nothing to drop: the very same object goes out.
    assert schema.shape_var("powermeter", value) == (value, [])


def test_shaping_and_checking_at_once_gives_the_two_calls_verdicts_every_time() -> None:
    schema = schema_from_types(release_types("main"), "EVerest main")
    measure = LiveMeasure(400.0, 10.0, 4.0, 30.0, 28.0, 12.5, 0.25, "2026-11-22T10:00:00+01:00")
    value = powermeter_var(powermeter_value(measure, "12024072805", NOW))
    extra = {**value, "vendor": "x"}
    bad = {**value, "meter_id": 7}
    # Twice each: the second look may come from what the first one remembered.
    for candidate in (value, extra, bad, value, extra, bad):
        shaped, dropped = schema.shape_var("powermeter", candidate)
        expected = (shaped, dropped, schema.check_var("powermeter", shaped))
        assert schema.shape_and_check_var("powermeter", candidate) == expected
    assert schema.shape_and_check_var("powermeter", extra)[1] == ["/vendor"]
    assert schema.shape_and_check_var("powermeter", bad)[2] is not None
    # A value of a known-valid shape goes out as the very same object.
    assert schema.shape_and_check_var("powermeter", value)[0] is value


def test_the_command_dispatcher_answers_in_the_types_in_use() -> None:
    from lem_dcbm.everest.bus import Message
    from lem_dcbm.everest.commands import CommandDispatcher
    from lem_dcbm.everest.topics import Topics

    topics = Topics("everest/", "powermeter_1")
    sent: list[dict[str, Any]] = []
    types = FrameworkTypes()
    dispatcher = CommandDispatcher(
        topics, lambda topic, payload: sent.append(json.loads(payload)), schema=types.schema
    )
    answer = results.start_response(
        StartResult(min_stop_time=NOW, max_stop_time=NOW, begin_record=RECORD)
    )
    dispatcher.register("start_transaction", lambda args: answer)
    call = {
        "msg_type": "Cmd",
        "data": {
            "id": "1",
            "origin": "evse_manager",
            "args": {"value": {"evse_id": "E1", "transaction_id": "tx-1",
                               "identification_status": "ASSIGNED",
                               "identification_flags": [], "identification_type": "ISO14443"}},
        },
    }  # fmt: skip
    message = Message(topics.cmd("start_transaction"), json.dumps(call).encode())
    dispatcher.execute(message)
    assert "signed_meter_value" in sent[-1]["data"]["data"]["retval"]
    older = release_types("2026.02.1")
    for name, body in older.items():
        types.receive(
            name, json.dumps({"msg_type": "ConfigurationResponse", "data": body}).encode()
        )
    dispatcher.execute(message)
    result = sent[-1]["data"]["data"]
    assert "error" not in result
    assert "signed_meter_value" not in result["retval"]
    assert result["retval"]["status"] == "OK"
