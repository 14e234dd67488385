"""The command pipeline without a broker: parse, validate, run, validate, answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lem_dcbm.everest import envelope
from lem_dcbm.everest.bus import Message
from lem_dcbm.everest.commands import CommandDispatcher
from lem_dcbm.everest.topics import Topics
from lem_dcbm.harness import wait_until
from lem_dcbm.request_limits import MAX_ROUTABLE_BYTES

TOPICS = Topics("everest/", "pm")
STOP = TOPICS.cmd("stop_transaction")
RESPONSE = TOPICS.cmd_response("stop_transaction", "evse")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(payload)["data"]["data"] for _, payload in self.sent]


def stop_handler(args: dict[str, Any]) -> Any:
    tid = args["transaction_id"]
    if tid == "boom":
        raise RuntimeError("boom")
    if tid == "bogus":
        return {"status": "MAYBE"}
    return {"status": "UNEXPECTED_ERROR", "error": f"no transaction {tid!r} running"}


def dispatcher(max_payload_bytes: int = 64 * 1024) -> tuple[CommandDispatcher, Recorder]:
    recorder = Recorder()
    commands = CommandDispatcher(TOPICS, recorder, max_payload_bytes=max_payload_bytes)
    commands.register("stop_transaction", stop_handler)
    return commands, recorder


def call(call_id: str, transaction_id: Any) -> Message:
    return Message(STOP, envelope.cmd_payload(call_id, {"transaction_id": transaction_id}, "evse"))


def test_a_device_failure_is_a_normal_result() -> None:
    commands, recorder = dispatcher()
    commands.execute(call("c1", "tx"))
    assert recorder.sent == [
        (
            RESPONSE,
            envelope.result_payload(
                "c1", "pm", {"status": "UNEXPECTED_ERROR", "error": "no transaction 'tx' running"}
            ),
        )
    ]


def test_handler_exception_and_invalid_result() -> None:
    commands, recorder = dispatcher()
    commands.execute(call("c1", "boom"))
    commands.execute(call("c2", "bogus"))
    failed, invalid = recorder.results()
    assert failed["error"] == {
        "__everest__error_type": "HandlerException",
        "__everest__error_msg": "RuntimeError: boom",
    }
    assert "retval" not in failed
    assert invalid["retval"] == {"status": "MAYBE"}
    assert invalid["error"]["__everest__error_type"] == "SchemaValidationError"
    assert invalid["error"]["__everest__error_msg"].startswith('At /status of "MAYBE"')


def test_schema_violation_names_the_place() -> None:
    commands, recorder = dispatcher()
    commands.execute(call("c1", 17))
    (answer,) = recorder.results()
    assert answer["error"] == {
        "__everest__error_type": "SchemaValidationError",
        "__everest__error_msg": "At /transaction_id of 17 - 17 is not of type 'string'",
    }


def test_size_limits() -> None:
    commands, recorder = dispatcher(max_payload_bytes=1000)
    commands.execute(call("big", "x" * 2000))
    (answer,) = recorder.results()
    assert answer["error"]["__everest__error_type"] == "MessageParsingError"
    assert "exceeds the limit of 1000 bytes" in answer["error"]["__everest__error_msg"]
    commands.execute(Message(STOP, b"{" + b" " * 2000))
    commands.execute(Message(STOP, b" " * (MAX_ROUTABLE_BYTES + 1)))
    assert len(recorder.sent) == 1


def test_unknown_topics_and_commands() -> None:
    commands, recorder = dispatcher()
    commands.execute(
        Message(TOPICS.cmd("start_transaction"), envelope.cmd_payload("c", {}, "evse"))
    )
    assert recorder.sent == []
    with pytest.raises(ValueError, match="declares no command"):
        commands.register("reboot", stop_handler)
    assert commands.command_topics() == [STOP]


def test_worker_survives_failures_and_shutdown_refuses_waiting_calls() -> None:
    commands, recorder = dispatcher()
    commands.start()
    commands.submit(call("c1", "boom"))
    commands.submit(Message(STOP, b"\xff"))
    commands.submit(call("c2", "tx"))
    wait_until(lambda: len(recorder.sent) == 2, 5, what="both answers")
    commands.stop(5)
    commands.submit(call("c3", "tx"))
    answers = {answer["id"]: answer for answer in recorder.results()}
    assert answers["c1"]["error"]["__everest__error_type"] == "HandlerException"
    assert answers["c2"]["retval"]["status"] == "UNEXPECTED_ERROR"
    assert answers["c3"]["error"] == {
        "__everest__error_type": "Shutdown",
        "__everest__error_msg": "the module is shutting down",
    }


def test_deep_nesting_is_refused_to_its_caller_without_parsing() -> None:
    commands, recorder = dispatcher()
    args = "[" * 1200 + "]" * 1200
    payload = (
        '{"msg_type":"Cmd","data":{"id":"deep-1","origin":"evse","args":{"transaction_id":'
        + args
        + "}}}"
    ).encode()
    commands.execute(Message(STOP, payload))
    [(topic, raw)] = recorder.sent
    assert topic == RESPONSE
    answer = json.loads(raw)["data"]["data"]
    assert answer["id"] == "deep-1"
    assert answer["error"]["__everest__error_type"] == "MessageParsingError"
    assert "1203 levels deep" in answer["error"]["__everest__error_msg"]


def test_deep_nesting_is_refused_to_a_caller_whose_id_is_long_when_escaped() -> None:
    """An id of 60 astral characters is 720 characters of JSON escapes; it is still found."""
    commands, recorder = dispatcher()
    call_id = "\U0001f600" * 60
    head = json.dumps({"id": call_id, "origin": "evse"})[:-1]
    deep = "[" * 40 + "]" * 40
    payload = ('{"msg_type":"Cmd","data":' + head + ',"args":' + deep + "}}").encode()
    commands.execute(Message(STOP, payload))
    [(_topic, raw)] = recorder.sent
    answer = json.loads(raw)["data"]["data"]
    assert answer["id"] == call_id
    assert answer["error"]["__everest__error_type"] == "MessageParsingError"


@pytest.mark.parametrize("where", ["transaction_id", "call id"])
def test_a_lone_surrogate_gets_an_answer_not_an_encoding_error(where: str) -> None:
    commands, recorder = dispatcher()
    call_id = "c-\\ud800" if where == "call id" else "c-1"
    transaction_id = "tx-\\ud800" if where == "transaction_id" else "tx-1"
    payload = (
        f'{{"msg_type":"Cmd","data":{{"id":"{call_id}","origin":"evse","args":{{"transaction_id":"{transaction_id}"}}}}}}'
    ).encode()
    commands.execute(Message(STOP, payload))
    [(topic, raw)] = recorder.sent
    assert topic == RESPONSE
    answer = json.loads(raw)["data"]["data"]
    assert answer["id"] == json.loads(f'"{call_id}"')
    if where == "transaction_id":
        assert answer["error"]["__everest__error_type"] == "SchemaValidationError"
        assert "not valid Unicode" in answer["error"]["__everest__error_msg"]
    raw.decode("utf-8")  # the answer itself is valid UTF-8


def test_nesting_depth_skips_strings() -> None:
    from lem_dcbm.everest.envelope import nesting_depth

    assert nesting_depth('{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert nesting_depth('"\\\\"[') == 1


def test_a_flood_beyond_the_waiting_limit_is_answered_at_once() -> None:
    from lem_dcbm.request_limits import MAX_WAITING

    commands, recorder = dispatcher()  # no worker started: every call waits in the queue
    for number in range(MAX_WAITING + 3):
        commands.submit(call(f"c{number}", "tx"))
    assert commands.waiting == MAX_WAITING
    refused = recorder.results()
    assert [r["id"] for r in refused] == [f"c{n}" for n in range(MAX_WAITING, MAX_WAITING + 3)]
    assert all(r["error"]["__everest__error_type"] == "HandlerException" for r in refused)
    assert "already waiting" in refused[0]["error"]["__everest__error_msg"]
