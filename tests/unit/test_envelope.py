"""Envelopes are byte-for-byte what EVerest's framework sends (recorded transcripts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lem_dcbm.everest import envelope
from lem_dcbm.everest.envelope import Generation

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
PLAIN = TRANSCRIPTS / "everest-framework-0.25-transcript.txt"
VALIDATE = TRANSCRIPTS / "everest-framework-0.25-transcript-forward-exceptions-validate.txt"


def lines(path: Path, topic: str, contains: str = "") -> list[bytes]:
    """Payloads recorded on ``topic`` (lines are ``topic retain payload``)."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line_topic, _, rest = line.partition(" ")
        payload = rest.partition(" ")[2]
        if line_topic == topic and payload and contains in payload:
            found.append(payload.encode())
    assert found, f"no line on {topic} containing {contains!r}"
    return found


PROVIDER = "everest/modules/meter_provider"
IMPL = f"{PROVIDER}/impl/main"


def test_var() -> None:
    recorded = lines(PLAIN, f"{IMPL}/var/powermeter")[0]
    value = json.loads(recorded)["data"]["data"]
    assert envelope.var_payload(value) == recorded


def test_successful_results() -> None:
    for recorded in lines(PLAIN, f"{IMPL}/cmd/start_transaction/response/meter_consumer") + lines(
        PLAIN, f"{IMPL}/cmd/stop_transaction/response/meter_consumer", "retval"
    ):
        data = json.loads(recorded)["data"]["data"]
        assert envelope.result_payload(data["id"], "meter_provider", data["retval"]) == recorded


def test_handler_exception_result() -> None:
    recorded = lines(
        PLAIN, f"{IMPL}/cmd/stop_transaction/response/meter_consumer", "HandlerException"
    )[0]
    data = json.loads(recorded)["data"]["data"]
    built = envelope.error_result_payload(
        data["id"], "meter_provider", "HandlerException", data["error"]["__everest__error_msg"]
    )
    assert built == recorded
    parsed = envelope.parse_result(recorded)
    assert (parsed.error_type, parsed.has_retval) == ("HandlerException", False)


def test_schema_validation_result_keeps_the_retval() -> None:
    recorded = lines(VALIDATE, f"{IMPL}/cmd/stop_transaction/response/meter_consumer", "BOGUS")[0]
    data = json.loads(recorded)["data"]["data"]
    built = envelope.error_result_payload(
        data["id"],
        "meter_provider",
        "SchemaValidationError",
        data["error"]["__everest__error_msg"],
        retval=data["retval"],
        with_retval=True,
    )
    assert built == recorded
    parsed = envelope.parse_result(recorded)
    assert parsed.has_retval
    assert parsed.retval == {"status": "BOGUS_STATUS"}


def test_unknown_error_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown command error type"):
        envelope.error_result_payload("1", "m", "Oops", "x")


def test_raise_and_clear() -> None:
    topic = f"{IMPL}/error/generic/CommunicationFault"
    raised, cleared = lines(PLAIN, topic)
    data = json.loads(raised)["data"]
    record = envelope.ErrorRecord(
        type=data["type"],
        sub_type=data["sub_type"],
        message=data["message"],
        description=data["description"],
        module_id="meter_provider",
        implementation_id="main",
        severity="High",
        timestamp=data["timestamp"],
        uuid=data["uuid"],
        vendor_id="everest",
    )
    assert envelope.raise_error_payload(record) == raised
    assert envelope.clear_error_payload(record) == cleared


def test_config_request_both_generations() -> None:
    recorded = lines(PLAIN, "everest/config/request", "meter_provider")[0]
    assert envelope.config_request_payload("meter_provider", Generation.FRAMEWORK_0_25) == recorded
    modern = json.loads(
        envelope.config_request_payload("meter_provider", Generation.FRAMEWORK_2026)
    )
    assert modern == {**json.loads(recorded), "msg_type": "ConfigurationRequest"}


def test_metadata_and_module_ready() -> None:
    recorded = lines(PLAIN, f"{PROVIDER}/metadata")[0]
    built = envelope.metadata_payload("provider", {"main": "powermeter"}, Generation.FRAMEWORK_0_25)
    assert built == recorded
    modern = envelope.metadata_payload(
        "provider", {"main": "powermeter"}, Generation.FRAMEWORK_2026
    )
    assert json.loads(modern)["msg_type"] == "ConfigurationResponse"
    assert envelope.module_ready_payload() == lines(PLAIN, f"{PROVIDER}/ready")[0]
    assert envelope.global_ready_payload() == lines(PLAIN, "everest/ready")[0]


def test_config_response_parameters() -> None:
    recorded = lines(PLAIN, f"{PROVIDER}/response")[0]
    response = envelope.parse_config_response(envelope.decode(recorded))
    assert response.generation is Generation.FRAMEWORK_0_25
    assert response.module_name == "provider"
    assert response.parameters == [
        {
            "characteristics": {"datatype": "string", "mutability": "ReadOnly"},
            "name": "greeting",
            "value": "hi-from-config",
        }
    ]
    modern = envelope.Envelope("ConfigurationResponse", json.loads(recorded)["data"])
    assert envelope.parse_config_response(modern).generation is Generation.FRAMEWORK_2026


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"status": "Error", "status_info": "no access"}, "refused"),
        ({"status": "Ok", "response": {}}, "lacks"),
        ("x", "not an object"),
    ],
)
def test_bad_config_responses(data: object, fragment: str) -> None:
    with pytest.raises(envelope.EnvelopeError, match=fragment):
        envelope.parse_config_response(envelope.Envelope("GetConfigResponse", data))


def test_command_from_transcript() -> None:
    recorded = lines(PLAIN, f"{IMPL}/cmd/start_transaction")[0]
    request = envelope.parse_command(recorded)
    assert request.origin == "meter_consumer"
    assert request.call_id == "dd175dd5-e86a-4da3-ba4a-dae0f6bdca5b"
    assert request.args["value"]["transaction_id"] == "tx-1"
    assert envelope.cmd_payload(request.call_id, request.args, request.origin) == recorded


GOOD_DATA: dict[str, object] = {"id": "c1", "origin": "evse", "args": {"transaction_id": ""}}
GOOD = {"msg_type": "Cmd", "data": GOOD_DATA}


def _with(**data: object) -> bytes:
    """GOOD with some data fields replaced (None: removed)."""
    merged = {**GOOD_DATA, **data}
    return json.dumps(
        {"msg_type": "Cmd", "data": {k: v for k, v in merged.items() if v is not None}}
    ).encode()


@pytest.mark.parametrize(
    ("payload", "routable", "fragment"),
    [
        (b"not json", False, "not JSON"),
        (b"[1, 2]", False, "JSON array"),
        (b'"text"', False, "JSON string"),
        (b"null", False, "JSON null"),
        (json.dumps(GOOD_DATA).encode(), True, "no envelope"),
        (json.dumps({**GOOD, "msg_type": "Var"}).encode(), True, "is not 'Cmd'"),
        (json.dumps({"msg_type": "Cmd", "data": [1]}).encode(), False, "'data' is not"),
        (_with(id=None), False, "'id'"),
        (_with(id=""), False, "'id'"),
        (_with(origin=None), False, "'origin'"),
        (_with(origin="a/b"), False, "'origin'"),
        (_with(origin="#"), False, "'origin'"),
        (_with(args=None), True, "no 'args'"),
        (_with(args=[1]), True, "JSON array, not an object"),
        (
            b'{"msg_type":"Cmd","data":{"id":"c1","origin":"evse","args":{"transaction_id":"\xff"}}}',
            True,
            "UTF-8",
        ),
        (b"\xff\xfe\x00garbage", False, "UTF-8"),
    ],
)
def test_bad_commands(payload: bytes, routable: bool, fragment: str) -> None:
    with pytest.raises(envelope.CommandParseError) as caught:
        envelope.parse_command(payload)
    assert caught.value.routable is routable
    assert caught.value.error_type == "MessageParsingError"
    assert fragment in caught.value.message
    if routable:
        assert (caught.value.call_id, caught.value.origin) == ("c1", "evse")


def test_generation_names() -> None:
    assert Generation.FRAMEWORK_2026.request_type == "ConfigurationRequest"
    assert Generation.FRAMEWORK_0_25.response_type == "GetConfigResponse"
    assert Generation.from_response_type("GetConfig") is None


def test_decode() -> None:
    assert envelope.decode(b'{"msg_type":"GlobalReady","data":true}') == envelope.Envelope(
        "GlobalReady", True
    )
    for bad in (b"\xff", b"{", b"[]", b'{"data": 1}'):
        with pytest.raises(envelope.EnvelopeError):
            envelope.decode(bad)
