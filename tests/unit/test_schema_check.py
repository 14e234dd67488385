"""The compiled schema checks give jsonschema's draft-7 verdict, value for value.

The module judges commands, answers, variables and config values with
``lem_dcbm.schema_check`` and loads jsonschema only to word a problem, so a check that
passed a value jsonschema refuses would let a bad call through or a bad answer out.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from lem_dcbm.config import _packaged_manifest, config_schema
from lem_dcbm.everest import validation
from lem_dcbm.schema_check import compile_check, equal

MEASUREMENT: dict[str, Any] = {
    "timestamp": "2026-11-22T10:00:00.123Z",
    "meter_id": "30000123",
    "energy_Wh_import": {"total": 1234.5, "L1": 1.0},
    "energy_Wh_export": {"total": 0.0},
    "power_W": {"total": 11000.0},
    "voltage_V": {"DC": 400.0},
    "current_A": {"DC": 27.5},
    "temperatures": [{"temperature": 31.5, "location": "temperatureH"}],
    "signed_meter_value": {
        "signed_meter_data": "OCMF|{}|{}",
        "signing_method": "",
        "encoding_method": "OCMF",
        "public_key": "",
    },
}
REQUEST: dict[str, Any] = {
    "evse_id": "DE*LEM*E0001",
    "transaction_id": "t-1",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": ["RFID_PLAIN"],
    "identification_data": "04A2B3C4D5E6F7",
    "tariff_text": "0.50 EUR/kWh",
}
SIGNED = MEASUREMENT["signed_meter_value"]
#: A valid value per (kind, name) of the interface, mutated by the tests below.
SAMPLES: dict[tuple[str, str], Any] = {
    ("arguments", "start_transaction"): {"value": REQUEST},
    ("arguments", "stop_transaction"): {"transaction_id": "t-1"},
    ("result", "start_transaction"): {
        "status": "OK",
        "transaction_min_stop_time": "2026-11-22T10:00:00Z",
        "transaction_max_stop_time": "2026-11-23T10:00:00Z",
        "signed_meter_value": SIGNED,
    },
    ("result", "stop_transaction"): {
        "status": "OK",
        "start_signed_meter_value": SIGNED,
        "signed_meter_value": SIGNED,
    },
    ("var", "powermeter"): MEASUREMENT,
    ("var", "public_key_ocmf"): "3059301306072A8648CE3D0201",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "OK", "ASSIGNED", "2026-11-22T10:00:00Z", "2026-13-22T10:00:00Z"])
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["total", "DC", "status", "x", "L1"]), inner, max_size=4)
    ),
    max_leaves=12,
)


def _interface_schema(kind: str, name: str) -> dict[str, Any]:
    compiled = validation.own_schema()._compile(kind, name)
    return compiled.schema


def _same_verdict(schema: Any, value: Any, formats: Any = None) -> None:
    check = compile_check(schema, formats)
    assert check is not None, schema
    checker = validation.format_checker() if formats else None
    expected = Draft7Validator(schema, format_checker=checker).is_valid(value)
    assert check(value) is expected, (schema, value)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, sample: Any) -> Any:
    """``sample`` with a few leaves or members replaced, removed or added."""
    value = copy.deepcopy(sample)
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        if not path:
            value = draw(json_values)
            continue
        parent = value
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return value


@pytest.mark.parametrize(("kind", "name"), sorted(SAMPLES))
def test_every_interface_schema_compiles_and_its_sample_is_valid(kind: str, name: str) -> None:
    schema = _interface_schema(kind, name)
    check = compile_check(schema, validation.FORMATS)
    assert check is not None
    assert check(SAMPLES[(kind, name)])
    _same_verdict(schema, SAMPLES[(kind, name)], validation.FORMATS)


@pytest.mark.parametrize(("kind", "name"), sorted(SAMPLES))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_interface_verdicts_equal_jsonschemas(kind: str, name: str, data: st.DataObject) -> None:
    value = data.draw(mutated(SAMPLES[(kind, name)]))
    _same_verdict(_interface_schema(kind, name), value, validation.FORMATS)


@settings(max_examples=300)
@given(
    key=st.sampled_from(sorted(config_schema(_packaged_manifest())["properties"])),
    value=json_values,
)
def test_config_verdicts_equal_jsonschemas(key: str, value: Any) -> None:
    spec = config_schema(_packaged_manifest())["properties"][key]
    _same_verdict(spec, value)


KEYWORD_CASES: list[tuple[Any, list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1", None, 2**70]),
    ({"type": "number"}, [1, 1.5, True, "1", None]),
    ({"type": ["string", "null"]}, ["a", None, 0, False]),
    ({"type": "boolean"}, [True, 0, 1, None]),
    (
        {"enum": [1, "a", None, [1, 2], {"k": False}]},
        [1, 1.0, True, "a", None, [1, 2], [True, 2], {"k": 0}, {"k": False}],
    ),
    ({"enum": [False, 0.5]}, [0, False, 0.5]),
    ({"const": 0}, [0, 0.0, False, None]),
    ({"minimum": 0, "exclusiveMaximum": 10}, [-1, 0, 9.99, 10, "x", True, None]),
    ({"exclusiveMinimum": 0, "maximum": 10}, [0, 0.001, 10, 10.5]),
    ({"minLength": 2, "maxLength": 3}, ["a", "ab", "abc", "abcd", "é€", 12, ["a"]]),
    ({"pattern": "^[0-9]+$"}, ["123", "12a", "", 123]),
    ({"pattern": "b"}, ["abc", "ac"]),
    (
        {"minItems": 1, "maxItems": 2, "items": {"type": "string"}},
        [[], ["a"], ["a", 1], ["a", "b", "c"], "ab", {}],
    ),
    (
        {"required": ["a"], "properties": {"a": {"type": "integer"}}},
        [{"a": 1}, {"a": "1"}, {}, [], "a"],
    ),
    ({"properties": {"a": {}}, "additionalProperties": False}, [{"a": 1}, {"b": 1}, {}, 5]),
    (
        {"properties": {"a": {}}, "additionalProperties": {"type": "number"}},
        [{"b": 1}, {"b": "x"}, {"a": "x"}],
    ),
    (
        {"format": "date-time"},
        ["2026-11-22T10:00:00Z", "2026-11-22 10:00", "2026-02-30T10:00:00Z", 5],
    ),
    ({"description": "only words", "default": 3, "mutability": "x"}, [1, "a", None]),
    (True, [1, None]),
    ({"items": False}, [[], [1], "x"]),
]


@pytest.mark.parametrize(("schema", "values"), KEYWORD_CASES)
def test_each_keyword_as_jsonschema_judges_it(schema: Any, values: list[Any]) -> None:
    for value in values:
        _same_verdict(schema, value, validation.FORMATS)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/definitions/x"},
        {"anyOf": [{"type": "string"}]},
        {"properties": {"a": {"oneOf": [{"type": "string"}]}}},
        {"patternProperties": {"^a": {}}},
        {"items": [{"type": "string"}]},
        {"uniqueItems": True},
        {"type": "decimal"},
    ],
)
def test_a_keyword_beyond_the_compiled_ones_leaves_the_verdict_to_jsonschema(schema: Any) -> None:
    assert compile_check(schema) is None


def test_json_equality_keeps_booleans_apart_from_numbers() -> None:
    assert equal(1, 1.0)
    assert not equal(True, 1)
    assert not equal([0], [False])
    assert equal({"a": [1]}, {"a": [1.0]})


def test_valid_values_never_load_jsonschema() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lem_dcbm.everest import validation\n"
        "from lem_dcbm.config import config_from_mapping\n"
        f"assert validation.check_var('powermeter', {MEASUREMENT!r}) is None\n"
        f"args = {{'value': {REQUEST!r}}}\n"
        "assert validation.check_arguments('start_transaction', args) is None\n"
        "config_from_mapping({'ip_address': '127.0.0.1', 'port': 80})\n"
        "assert not [m for m in sys.modules if m.startswith('jsonschema')], 'jsonschema loaded'\n"
        "assert validation.check_arguments('stop_transaction', {}) is not None\n"
        "assert 'jsonschema' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
