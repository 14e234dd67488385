"""Hostile input for the two doors of the module: command payloads and meter answers.

Strategies (hypothesis) and the invariant checks are shared by the CI fuzz tests
(``tests/unit/test_fuzz.py``, a fixed seed and 2 000 examples per target;
``tests/integration/test_meter_fuzz_sockets.py`` for meter answers over real sockets) and
the long run in ``bench/fuzz_soak.py``.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable
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
from lem_dcbm.meter.transport import HttpTransport
from tests.support.hostile_meter import GARBAGE_HEADS, Act, HostileMeter

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
_ID_FIRST = string.ascii_letters + "_"
#: Ids as ``[a-zA-Z_][a-zA-Z0-9_.-]{0,20}`` matches them, built directly: generating from
#: the regex cost as much as the whole rest of a routable call.
MODULE_IDS = st.builds(
    str.__add__,
    st.sampled_from(_ID_FIRST),
    st.text(alphabet=_ID_FIRST + string.digits + ".-", max_size=20),
)


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


def _repeat_to(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


#: 5 000 to 6 000 characters, a drawn piece repeated: drawing each of them one by one
#: made this one alternative most of the fuzz tests' time, and the code under test
#: meets the same class of input (an oversized string of any characters).
LONG_TEXT = st.builds(_repeat_to, st.text(min_size=1, max_size=60), st.integers(5000, 6000))
ARG_VALUES = JSON_VALUES | nested(40) | nested(1200) | LONG_TEXT


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


# -- meter answers on the wire (HostileMeter) ----------------------------------------------

#: The client's timeout against ``HostileMeter``: short, so that slow drips cost little.
WIRE_TIMEOUT_S = 0.5
#: The longest one client call may take: one re-send on a fresh connection, plus slack
#: for a loaded machine.
WIRE_BOUND_S = 2 * WIRE_TIMEOUT_S + 0.75

WIRE_BODIES = (
    st.binary(max_size=120)
    | st.just(b"OCMF|{}|{}")
    | st.just(b'{"status": {"value": 17, "bits": {')
    | st.just(b"{}")
    | st.just(b"null")
)
#: Every way ``HostileMeter`` answers a request, the well-formed meter answer included.
WIRE_ACTS = st.one_of(
    st.just(Act()),
    st.builds(
        Act,
        kind=st.just("answer"),
        status=st.sampled_from([200, 201, 204, 404, 500, 503]) | st.integers(100, 599),
        body=WIRE_BODIES,
    ),
    st.builds(Act, kind=st.just("truncate"), extra=st.integers(1, 5000)),
    st.builds(Act, kind=st.just("drip"), gap_s=st.sampled_from([0.05, 0.1])),
    st.builds(Act, kind=st.just("reset"), before_reset=st.sampled_from([0, 5, 40])),
    st.builds(Act, kind=st.just("garbage"), extra=st.integers(0, len(GARBAGE_HEADS) - 1)),
)

WireCall = tuple[str, str, Callable[[MeterClient], Any], int]
#: (method, path, call, expected status): calls the meter always answers when well.
#: (``/ocmf`` and the transaction endpoints need a transaction: the stop's fuzz test.)
WIRE_CALLS: list[WireCall] = [
    ("GET", "/v1/status", MeterClient.status, 200),
    ("GET", "/v1/livemeasure", MeterClient.livemeasure, 200),
    ("GET", "/v1/legal", MeterClient.legal, 200),
    ("GET", "/v1/settings", MeterClient.settings, 200),
    ("PUT", "/v1/settings", lambda c: c.put_settings({"time": {"tz": "+01:00"}}), 200),
]


def wire_client(server: HostileMeter) -> MeterClient:
    """The real client (urllib3, keep-alive) in front of ``server``."""
    return MeterClient(HttpTransport(server.base_url, timeout_s=WIRE_TIMEOUT_S))


def wire_call_problem(server: HostileMeter, endpoint: WireCall, act: Act) -> tuple[str, str] | None:
    """One client call answered with ``act``: (invariant broken, detail), or None.

    The invariants: only a ``MeterError`` leaves the client (``crash``), the call ends
    within ``WIRE_BOUND_S`` (``slow``), an answer that is incomplete, unreadable or not
    the promised status gives no result (``result from an invalid answer``) and the
    meter's own answer gives one (``good answer refused``).
    """
    method, path, call, expected = endpoint
    client = wire_client(server)
    server.plan(method, path, [act, act])  # a re-send on a fresh connection gets the same
    started = time.monotonic()
    try:
        outcome: Any = call(client)
    except MeterError as err:
        outcome = err
    except Exception as err:  # noqa: BLE001 - the invariant under test
        return "crash", f"{act}: {err!r}"
    finally:
        took = time.monotonic() - started
        server.clear()
        client.close()
    if took > WIRE_BOUND_S:
        return "slow", f"{act.kind} took {took:.2f} s"
    failed = isinstance(outcome, MeterError)
    if act.kind == "meter" and failed:
        return "good answer refused", f"{path}: {outcome}"
    if not failed and (not act.well_formed or act.status != expected):
        return "result from an invalid answer", f"{path} {act}: {outcome!r}"
    return None
