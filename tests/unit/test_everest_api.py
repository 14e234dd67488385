"""API mode without a broker: codecs, the condition board, the heartbeat watch, requests.

Where the AsyncAPI definition in ``../shared`` is needed, the test skips without it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from lem_dcbm.clock import ManualClock
from lem_dcbm.config import BrokerSettings
from lem_dcbm.core.results import SignedRecord, StartResult, StopResult, TransactionRequest
from lem_dcbm.errors import ConfigError
from lem_dcbm.everest import results
from lem_dcbm.everest.bus import Message, MqttBus
from lem_dcbm.everest.validation import format_checker, interface_document
from lem_dcbm.everest_api import codecs
from lem_dcbm.everest_api.adapter import ApiAdapter
from lem_dcbm.everest_api.conditions import ConditionBoard, status_schema
from lem_dcbm.everest_api.heartbeat import HeartbeatWatch
from lem_dcbm.everest_api.mode import api_mode
from lem_dcbm.everest_api.requests import RequestWorker
from lem_dcbm.everest_api.topics import ApiTopics, status_topic
from lem_dcbm.harness import transaction_request, write_config
from tests.support import asyncapi
from tests.support.cli_in_process import run_cli

TOPICS = ApiTopics("pm")
REPLY = TOPICS.reply("r1")


def body(payload: Any, reply_to: str | None = REPLY) -> bytes:
    document: dict[str, Any] = {"payload": payload}
    if reply_to is not None:
        document["headers"] = {"replyTo": reply_to}
    return json.dumps(document).encode()


# --- topics and codecs --------------------------------------------------------------


def test_topics_follow_the_frameworks_builder() -> None:
    assert TOPICS.e2m("start_transaction") == "everest_api/1/powermeter/pm/e2m/start_transaction"
    assert (
        TOPICS.m2e("communication_check") == "everest_api/1/powermeter/pm/m2e/communication_check"
    )
    assert TOPICS.reply("u") == "everest_api/1/powermeter/pm/m2e/reply/u"
    assert TOPICS.e2m_name("everest_api/1/powermeter/pm/e2m/heartbeat") == "heartbeat"
    assert TOPICS.e2m_name("everest_api/1/powermeter/pm/e2m/a/b") is None
    assert ApiTopics("pm", "ext").base == "ext/everest_api/1/powermeter/pm"
    assert status_topic("ext", "pm") == "ext/lem_dcbm/pm/status"
    assert status_topic("", "pm") == "lem_dcbm/pm/status"


@pytest.mark.parametrize(
    "headers",
    [None, 5, {}, {"replyTo": ""}, {"replyTo": 3}, {"replyTo": "a/+/b"}, {"replyTo": "#"}],
)
def test_a_reply_topic_one_cannot_publish_to_is_no_reply_topic(headers: Any) -> None:
    assert codecs.reply_topic(headers) is None
    assert codecs.reply_topic({"replyTo": "\ud800"}) is None


def test_requests_are_decoded_or_refused_with_where_to_say_so() -> None:
    request = codecs.parse_request(body({"transaction_id": "t"}))
    assert request.reply_to == REPLY
    assert codecs.stop_transaction_id(request.payload) == "t"
    assert codecs.stop_transaction_id("bare") == "bare"  # a string payload, unwrapped
    with pytest.raises(codecs.RequestError) as no_payload:
        codecs.parse_request(json.dumps({"headers": {"replyTo": REPLY}}).encode())
    assert no_payload.value.reply_to == REPLY
    for raw in (b"\xff", b"[1]", b"nul", b"[" * 70 + b"]" * 70):
        with pytest.raises(codecs.RequestError) as unroutable:
            codecs.parse_request(raw)
        assert unroutable.value.reply_to is None
    deep = body([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]])
    with pytest.raises(codecs.RequestError, match="nested deeper") as too_deep:
        codecs.parse_request(deep)
    assert too_deep.value.reply_to == REPLY  # found in the text, to say so


def test_a_start_is_checked_like_the_interfaces_transaction_request() -> None:
    value = transaction_request("t1")
    assert codecs.start_request({**value, "extra": 1}) == value  # other members ignored
    with pytest.raises(codecs.RequestError, match="At /payload.*identification_type"):
        codecs.start_request({**value, "identification_type": "PASSPORT"})
    with pytest.raises(codecs.RequestError, match="not valid Unicode"):
        codecs.start_request({**value, "identification_data": "\ud800"})
    with pytest.raises(codecs.RequestError):
        codecs.stop_transaction_id({"transaction_id": 5})


def test_encoded_messages_are_valid_utf8_json() -> None:
    assert json.loads(codecs.encode({"error": "bad \ud800"})) == {"error": "bad ?"}


# --- checked against the AsyncAPI definition -------------------------------------------


def test_the_start_request_schema_is_the_interfaces_apart_from_extra_members() -> None:
    asyncapi.require_definition()
    ours = dict(interface_document()["definitions"]["powermeter"]["TransactionReq"])
    api = dict(asyncapi.schema("StartTransactionRequest"))
    assert ours.pop("additionalProperties") is False
    assert api.pop("additionalProperties") is True
    assert sorted(ours["required"]) == sorted(api["required"])
    assert set(ours["properties"]) == set(api["properties"])
    for name in ("OCMFIdentificationFlags", "OCMFIdentificationType", "OCMFIdentificationLevel"):
        assert (
            interface_document()["definitions"]["powermeter"][name]["enum"]
            == (asyncapi.schema(name)["enum"])
        )


def test_every_reply_the_core_can_give_fits_the_reply_schemas() -> None:
    asyncapi.require_definition()
    record = SignedRecord("OCMF|{}|{}", "3059")
    moment = datetime(2026, 11, 22, tzinfo=timezone.utc)
    starts = [
        results.start_response(StartResult(min_stop_time=moment, max_stop_time=moment)),
        results.start_response(
            StartResult(min_stop_time=moment, max_stop_time=moment, begin_record=record)
        ),
        results.start_response(StartResult(error="meter says no")),
        results.failed("start refused: billing is impossible now"),
    ]
    stops = [results.stop_response(StopResult(record=record)), results.failed("no record")]
    for reply in starts:
        assert (
            asyncapi.problems("send_reply_start_transaction", json.loads(codecs.encode(reply)))
            == []
        )
    for reply in stops:
        assert (
            asyncapi.problems("send_reply_stop_transaction", json.loads(codecs.encode(reply))) == []
        )
    assert asyncapi.problems("send_reply_stop_transaction", {"status": "FINE"})  # not vacuous


# --- the condition board -----------------------------------------------------------


def test_conditions_are_published_and_only_billing_fatal_ones_refuse_starts() -> None:
    published: list[dict[str, Any]] = []
    board = ConditionBoard("pm", published.append, ManualClock())
    board.raise_error("VendorWarning", "TemperatureWarning", "62 C", "Low")
    board.raise_error("VendorWarning", "TemperatureWarning", "62 C", "Low")
    assert len(published) == 1
    assert board.refusal() is None
    assert published[-1]["billing_possible"] is True
    board.raise_error("VendorError", "tamperingIsDetected", "the meter was opened")
    refusal = board.refusal()
    assert refusal is not None
    assert "VendorError/tamperingIsDetected: the meter was opened" in refusal
    assert published[-1]["billing_possible"] is False
    assert [c["error"] for c in published[-1]["conditions"]] == ["VendorWarning", "VendorError"]
    board.clear_error("VendorError", "tamperingIsDetected")
    board.clear_error("VendorError", "tamperingIsDetected")
    assert len(published) == 3
    assert board.refusal() is None


def test_status_messages_fit_their_shipped_schema() -> None:
    published: list[dict[str, Any]] = []
    board = ConditionBoard("pm", published.append, ManualClock())
    board.raise_error("CommunicationFault", "", "meter communication failed")
    board.raise_error("VendorWarning", "OcmfCheckFailed", "record of another meter", "Low")
    board.set_heartbeat("missing")
    validator = Draft202012Validator(status_schema(), format_checker=format_checker())
    for document in [*published, board.document(), board.offline_document()]:
        assert list(validator.iter_errors(document)) == [], document
    assert list(validator.iter_errors({**board.document(), "online": "yes"}))


# --- the heartbeat ------------------------------------------------------------------


def test_heartbeat_absence_and_return_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    states: list[str] = []
    resumed: list[bool] = []
    watch = HeartbeatWatch(
        "pm", "hb", clock, on_change=states.append, on_resumed=lambda: resumed.append(True)
    )
    caplog.set_level(logging.INFO)
    watch.beat(b"1")
    clock.advance(1.0)
    watch.beat(b"2")  # interval 1 s: missing after 3 s
    clock.advance(2.9)
    watch.check()
    assert states == ["ok"]
    clock.advance(0.2)
    watch.check()
    clock.advance(10)
    watch.check()
    watch.beat(b"3")
    watch.beat(b"0")  # ids start again: EVerest restarted
    assert states == ["ok", "missing", "ok"]
    assert resumed == [True, True]
    text = caplog.text
    assert text.count("heartbeat stopped") == 1
    assert text.count("heartbeat is back") == 1
    assert text.count("started again") == 1


def test_no_heartbeat_at_all_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    watch = HeartbeatWatch("pm", "hb", clock, on_change=lambda s: None, on_resumed=lambda: None)
    for _ in range(5):
        clock.advance(2.0)
        watch.check()
    watch.beat(b'"not an id"')
    watch.beat(b"[]")
    assert caplog.text.count("no heartbeat from EVerest") == 1
    assert caplog.text.count("not an integer id") == 1


# --- requests -----------------------------------------------------------------------


class Handlers:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start_transaction(self, request: TransactionRequest) -> StartResult:
        self.calls.append(f"start {request.transaction_id}")
        return StartResult(error="a test start")

    def stop_transaction(self, transaction_id: str) -> StopResult:
        self.calls.append(f"stop {transaction_id}")
        return StopResult(record=SignedRecord("OCMF|{}|{}", ""))


def worker(refusal: str | None = None) -> tuple[RequestWorker, Handlers, list[tuple[str, Any]]]:
    handlers = Handlers()
    sent: list[tuple[str, Any]] = []
    requests = RequestWorker(
        TOPICS, handlers, lambda t, p: sent.append((t, json.loads(p))), refusal=lambda: refusal
    )
    return requests, handlers, sent


def message(name: str, payload: bytes, *, retain: bool = False) -> Message:
    return Message(TOPICS.e2m(name), payload, retain)


def test_starts_are_refused_while_billing_is_impossible_and_stops_still_served() -> None:
    requests, handlers, sent = worker(refusal="billing is impossible now (VendorError/x: y)")
    requests.execute(message("start_transaction", body(transaction_request("t1"))))
    requests.execute(message("stop_transaction", body({"transaction_id": "t0"})))
    assert handlers.calls == ["stop t0"]
    assert sent[0] == (
        REPLY,
        {
            "status": "UNEXPECTED_ERROR",
            "error": "start refused: billing is impossible now (VendorError/x: y)",
        },
    )
    assert sent[1][1]["status"] == "OK"


def test_a_valid_request_without_reply_to_is_carried_out_and_a_bad_one_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    requests, handlers, sent = worker()
    requests.execute(message("stop_transaction", body({"transaction_id": "t9"}, reply_to=None)))
    assert handlers.calls == ["stop t9"]
    assert sent == []
    for _ in range(3):
        requests.execute(message("start_transaction", b"{broken"))
    assert caplog.text.count("dropped a start_transaction request") == 1
    requests.execute(message("start_transaction", body({"evse_id": 1})))
    assert sent[-1][1]["status"] == "UNEXPECTED_ERROR"
    assert "At /payload" in sent[-1][1]["error"]


def test_a_stop_without_reply_to_hands_its_record_on() -> None:
    handlers = Handlers()
    unanswered: list[str] = []
    requests = RequestWorker(TOPICS, handlers, lambda t, p: None, unanswered_stop=unanswered.append)
    requests.execute(message("stop_transaction", body({"transaction_id": "t7"}, reply_to=None)))
    requests.execute(message("start_transaction", body(transaction_request("t8"), reply_to=None)))
    assert unanswered == ["t7"]


def test_retained_requests_are_ignored_and_queued_ones_refused_at_shutdown() -> None:
    requests, handlers, sent = worker()
    requests.submit(message("stop_transaction", body({"transaction_id": ""}), retain=True))
    requests.stop(0.1)
    requests.submit(message("stop_transaction", body({"transaction_id": ""})))
    assert handlers.calls == []
    assert sent == [(REPLY, {"status": "UNEXPECTED_ERROR", "error": "the module is shutting down"})]


# --- the adapter's pulse and the mode switch ----------------------------------------------


class FakeBus:
    connected = True

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, **options: Any) -> bool:
        self.published.append((topic, payload))
        return True


def test_the_communication_check_is_withheld_while_billing_is_impossible() -> None:
    adapter = ApiAdapter(BrokerSettings(), "pm", Handlers(), clock=ManualClock())
    bus = FakeBus()
    adapter._bus = bus  # type: ignore[assignment]
    check = TOPICS.m2e("communication_check")

    def checks() -> int:
        return sum(1 for topic, payload in bus.published if topic == check and payload == b"true")

    adapter.pulse_once()
    assert checks() == 0  # the meter has not answered yet
    adapter.publish_public_key_ocmf("3059")
    adapter.pulse_once()
    assert checks() == 1
    adapter.raise_error("CommunicationFault", "", "meter communication failed")
    adapter.pulse_once()
    assert checks() == 1
    adapter.clear_error("CommunicationFault", "")
    adapter.pulse_once()
    assert checks() == 2
    statuses = [json.loads(p) for t, p in bus.published if t == adapter.status_topic]
    assert [s["billing_possible"] for s in statuses] == [False, True]
    assert all(s["online"] for s in statuses)
    offline = adapter.board.offline_document()
    assert offline["online"] is False
    assert offline["billing_possible"] is False


@pytest.mark.parametrize(("value", "on"), [("1", True), ("true", True), ("", False), ("0", False)])
def test_the_environment_switches_api_mode(value: str, on: bool) -> None:
    assert api_mode(False, {"LEM_DCBM_EVEREST_API": value}) is on
    assert api_mode(True, {"LEM_DCBM_EVEREST_API": value}) is True


def test_an_unclear_api_mode_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="LEM_DCBM_EVEREST_API"):
        api_mode(False, {"LEM_DCBM_EVEREST_API": "maybe"})


def test_run_with_an_unclear_api_mode_variable_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "config.yaml", {"ip_address": "127.0.0.1", "port": 80})
    monkeypatch.setenv("LEM_DCBM_EVEREST_API", "maybe")
    result = run_cli(["run", "--config", str(config), "--broker-port", "1"], capsys)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "LEM_DCBM_EVEREST_API" in line


def test_publishing_after_a_message_queued_without_a_connection_does_not_raise() -> None:
    # paho's info of a message published while disconnected raises when asked about it;
    # the status (QoS 1) is published while the broker is away, then again at shutdown.
    bus = MqttBus(BrokerSettings(port=1), "offline-test")
    try:
        assert bus.publish("t", b"1", qos=1)
        assert bus.publish("t", b"2", qos=1)
    finally:
        bus.close(0.1)
