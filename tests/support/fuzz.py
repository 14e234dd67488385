"""Hostile input for the two doors of the module: command payloads and meter answers.

Strategies (hypothesis) and the invariant checks are shared by the CI fuzz tests
(``tests/unit/test_fuzz.py``, a fixed seed and 2 000 examples per target) and the long
run in ``bench/fuzz_soak.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from lem_dcbm.core.results import SignedRecord, StartResult, StopResult
from lem_dcbm.errors import MeterError
from lem_dcbm.everest import envelope, results, validation
from lem_dcbm.everest.bus import Message
from lem_dcbm.everest.commands import CommandDispatcher
from lem_dcbm.everest.topics import Topics
from lem_dcbm.meter.client import MeterClient

TOPICS = Topics("everest/", "pm")
COMMANDS = ("start_transaction", "stop_transaction")

#: Any character, lone surrogates included (JSON's \ud800 escape can carry them in).
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)
MODULE_IDS = st.from_regex(r"\A[a-zA-Z_][a-zA-Z0-9_.-]{0,20}\Z")


def _dumps(value: Any) -> bytes:
    # ASCII escapes carry lone surrogates as \udxxx, as a hostile client would send them.
    text = json.dumps(value)
    for depth in (40, 1200):
        text = text.replace(json.dumps(DEEP.format(depth)), "[" * depth + "]" * depth)
    return text.encode()


#: Stands for an array nested this deep; replaced in the payload text (too deep to dump).
DEEP = "\x00deep-{}\x00"


def nested(depth: int) -> st.SearchStrategy[Any]:
    """A placeholder for a value nested ``depth`` levels deep."""
    return st.just(DEEP.format(depth))


ARG_VALUES = JSON_VALUES | nested(40) | nested(1200) | st.text(min_size=5000, max_size=6000)


@st.composite
def routable_calls(draw: st.DrawFn) -> tuple[str, bytes, str, str]:
    """(command, payload, call id, origin) of a call with a valid id and origin."""
    command = draw(st.sampled_from(COMMANDS))
    call_id = draw(ANY_TEXT.filter(bool))
    origin = draw(MODULE_IDS)
    if command == "start_transaction":
        args: Any = draw(
            st.dictionaries(ANY_TEXT, ARG_VALUES, max_size=3)
            | st.fixed_dictionaries({"value": ARG_VALUES})
        )
    else:
        args = draw(st.fixed_dictionaries({"transaction_id": ARG_VALUES}) | JSON_VALUES)
    document = {"msg_type": "Cmd", "data": {"id": call_id, "args": args, "origin": origin}}
    return command, _dumps(document), call_id, origin


ANY_PAYLOADS = st.binary(max_size=300) | JSON_VALUES.map(_dumps)


@dataclass
class CommandTarget:
    """A dispatcher with well-behaved handlers, and what it answered."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dispatcher = CommandDispatcher(TOPICS, self._publish)
        self.dispatcher.register("start_transaction", self._start)
        self.dispatcher.register("stop_transaction", self._stop)

    def _publish(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))

    def _start(self, args: dict[str, Any]) -> Any:
        self.handled.append("start_transaction")
        return results.start_response(StartResult(error="not started: a fuzz call"))

    def _stop(self, args: dict[str, Any]) -> Any:
        self.handled.append("stop_transaction")
        return results.stop_response(StopResult(record=SignedRecord("OCMF|{}|{}", "")))

    def feed(self, command: str, payload: bytes, *, retain: bool = False) -> list[bytes]:
        """Hand one message to the dispatcher; return the answers it published."""
        before = len(self.sent)
        message = Message(TOPICS.cmd(command), payload, retain)
        if retain:
            self.dispatcher.submit(message)  # the door a retained message would come in by
        else:
            self.dispatcher.execute(message)
        return [payload for _, payload in self.sent[before:]]


def check_answer(command: str, answer: bytes, call_id: str) -> str | None:
    """What is wrong with an answer to a routable call, or None."""
    try:
        document = json.loads(answer.decode("utf-8"))
        data = document["data"]["data"]
    except (ValueError, KeyError, TypeError) as err:
        return f"answer is not an EVerest CmdResult: {err}"
    if document.get("msg_type") != envelope.CMD_RESULT:
        return f"answer msg_type {document.get('msg_type')!r}"
    if data.get("id") != call_id:
        return f"answer id {data.get('id')!r} is not the call's {call_id!r}"
    if "retval" in data and "error" not in data:
        problem = validation.check_result(command, data["retval"])
        if problem is not None:
            return f"retval breaks the interface: {problem}"
    elif "error" not in data:
        return "answer has neither retval nor error"
    return None


@st.composite
def meter_answers(draw: st.DrawFn) -> tuple[int, str]:
    """A status and a body as a broken or hostile meter might answer."""
    status = draw(
        st.sampled_from([200, 201, 204, 301, 400, 404, 405, 409, 500, 503]) | st.integers(100, 599)
    )
    body = draw(
        st.text(max_size=200)
        | JSON_VALUES.map(json.dumps)
        | st.just("OCMF|{}|{}")
        | st.just('{"status": {"value": 17, "bits": {')
        | st.builds(lambda v: json.dumps({"transactionId": v, "running": True}), JSON_SCALARS)
    )
    return status, body


class CannedTransport:
    """A transport that answers every request with one canned answer."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body

    def request(self, method: str, path: str, **_: Any) -> tuple[int, str]:
        """The canned answer."""
        return self.status, self.body

    def close(self) -> None:
        """Nothing to close."""


def every_client_call(client: MeterClient) -> list[Any]:
    """Each call of the meter client once: every answer either parses or is a MeterError."""
    calls = [
        client.status,
        client.livemeasure,
        client.legal,
        lambda: client.start_transaction({"transactionId": "t"}),
        lambda: client.stop_transaction("t"),
        lambda: client.ocmf("t"),
        client.settings,
        lambda: client.put_settings({"time": {"tz": "+01:00"}}),
        client.certificate,
        client.supports_v2,
    ]
    outcomes: list[Any] = []
    for call in calls:
        try:
            outcomes.append(call())
        except MeterError as err:
            outcomes.append(err)
    return outcomes
