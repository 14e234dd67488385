"""Text from outside is parsed with its depth bounded, integers read only in canonical form."""

from __future__ import annotations

import json

import pytest

from lem_dcbm.bounded_json import TooDeep, loads_bounded
from lem_dcbm.config import config_from_mapping, config_with_change
from lem_dcbm.errors import ConfigError
from lem_dcbm.everest import envelope
from lem_dcbm.everest.config_changes import SetRequestError, parse_set_request
from lem_dcbm.everest.presence import Instance
from lem_dcbm.everest_api.heartbeat import _beat_id


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_deep_json_is_refused_unparsed(text: str) -> None:
    with pytest.raises(TooDeep, match="5000 levels deep"):
        loads_bounded(text)
    with pytest.raises(envelope.EnvelopeError, match="levels deep"):
        envelope.decode(text.encode())
    assert _beat_id(text.encode()) is None


def test_a_deep_set_request_is_a_set_request_error() -> None:
    deep = "[" * 5000 + "]" * 5000
    payload = '{"msg_type":"ConfigurationRequest","data":{"value":' + deep + "}}"
    with pytest.raises(SetRequestError, match="levels deep"):
        parse_set_request(payload.encode())


def test_a_set_request_with_a_huge_name_is_refused() -> None:
    data = {"identifier": {"module_id": "m", "configuration_parameter_name": "k" * 300}}
    payload = json.dumps({"msg_type": "ConfigurationRequest", "data": {**data, "value": "1"}})
    with pytest.raises(SetRequestError, match="longer than 256 characters"):
        parse_set_request(payload.encode())


BASE = config_from_mapping({"ip_address": "192.0.2.1"})


@pytest.mark.parametrize("text", [" 3", "+3", "\u0663", "3\n", "03", "1_0", "3.0", "", "-"])
def test_an_integer_key_takes_only_the_canonical_text(text: str) -> None:
    with pytest.raises(ConfigError, match="config key 'cable_id': cannot read"):
        config_with_change(BASE, "cable_id", text)


@pytest.mark.parametrize(("text", "value"), [("3", 3), ("0", 0), ("7", 7)])
def test_canonical_integers_are_taken(text: str, value: int) -> None:
    assert config_with_change(BASE, "cable_id", text).cable_id == value


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        config_with_change(BASE, "cable_id", "x" * 1_000_000)
    assert len(str(caught.value)) < 200
    with pytest.raises(ConfigError) as caught:
        config_with_change(BASE, "meter_timezone", "+" * 1_000_000)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    "payload",
    [
        b'{"instance":"x","pid":1,"host":"h","started":NaN,"state":"online"}',
        b'{"instance":"x","pid":1,"host":"h","started":"inf","state":"online"}',
        b'{"instance":"x","pid":1180591620717411303424,"host":"h","started":1,"state":"online"}',
        b'{"instance":"x","pid":1,"host":"h","started":' + b"9" * 400 + b',"state":"online"}',
        b'{"instance":"x","pid":1,"host":"h","started":1,"state":"maybe"}',
        b'{"instance":"","pid":1,"host":"h","started":1,"state":"online"}',
        b'{"instance":"x","pid":1,"host":"h\\n","started":1,"state":"online"}',
        b'{"instance":"x","pid":1,"host":{"a":1},"started":1,"state":"online"}',
        b"[1]",
        b"x" * 2000,
    ],
)
def test_a_presence_that_is_not_exactly_one_is_none(payload: bytes) -> None:
    assert Instance.parse(payload) is None


def test_a_presence_round_trips_and_describes_any_time() -> None:
    me = Instance("abc", 42, "host", 1.7e9)
    assert Instance.parse(me.payload()) == me
    assert "running since 2023-" in me.describe()
    assert "no time" in Instance("abc", 42, "host", 1e300).describe()
