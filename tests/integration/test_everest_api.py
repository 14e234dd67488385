"""API mode against a real mosquitto: the module as a client of EVerest's powermeter API.

The test plays the ``powermeter_API`` bridge the way the framework's request helper does
(``{"headers": {"replyTo": ...}, "payload": ...}``, a fresh reply topic per request) and
records everything under the external prefix (the API's topics among it). Every message the
module sends is checked against the AsyncAPI definition in ``../shared``.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lem_dcbm.config import BrokerSettings
from lem_dcbm.everest_api.conditions import status_schema
from lem_dcbm.everest_api.topics import ApiTopics, status_topic
from lem_dcbm.harness import (
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.harness import transaction_request as request
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.tools.api_client import ApiClient
from tests.support import asyncapi, fuzz
from tests.support.cli_in_process import run_cli
from tests.support.everest_peer import EverestPeer, Received
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: The id of the powermeter_API module in EVerest's config (and of the module's entry).
MODULE = "pm_api"
EXTERNAL_PREFIX = "ext/"
#: EVerest's external MQTT carries the API, under its external prefix.
TOPICS = ApiTopics(MODULE, EXTERNAL_PREFIX)
OCMF_PATHS = ["/v1/ocmf", "/v2/ocmf"]


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE) as started:
        started.subscribe(f"{EXTERNAL_PREFIX}#")
        yield started


@pytest.fixture
def bridge(mosquitto: Broker) -> Iterator[ApiClient]:
    """The bridge's heartbeat, every 0.5 s, as long as the test runs."""
    broker = BrokerSettings(
        host=mosquitto.host, port=mosquitto.port, external_prefix=EXTERNAL_PREFIX
    )
    client = ApiClient(broker, MODULE)
    client.connect()
    client.start_heartbeat(0.5)
    try:
        yield client
    finally:
        client.close()


def run_api_module(
    tmp_path: Path, sim: Simulator, broker_port: int, **overrides: Any
) -> ModuleProcess:
    values = simulator_config(sim, journal_dir=str(tmp_path / "journal"), **overrides)
    config = write_config(tmp_path / "config.yaml", values, module_id=MODULE)
    return start_module(
        tmp_path,
        config,
        broker_port,
        extra_args=["--everest-api", "--module-id", MODULE],
        env={"EV_MQTT_EXTERNAL_PREFIX": EXTERNAL_PREFIX},
    )


def reply(peer: EverestPeer, reply_to: str, timeout: float = 20.0) -> dict[str, Any]:
    """The one reply on ``reply_to``."""
    [answer] = peer.wait_for(lambda: peer.on_topic(reply_to), timeout, f"a reply on {reply_to}")
    value: dict[str, Any] = answer.json()
    return value


def m2e(peer: EverestPeer, name: str) -> list[Received]:
    return peer.on_topic(TOPICS.m2e(name))


def gaps(messages: list[Received]) -> list[float]:
    times = [m.received_at for m in messages]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def assert_all_sent_messages_valid(peer: EverestPeer, replies: dict[str, str]) -> int:
    """Every message of the module on ``m2e`` fits its AsyncAPI schema; return how many.

    ``replies`` maps each reply topic to its request's name; a reply to a request the
    test did not send itself (the tools') must fit one of the two reply schemas.
    """
    checked = 0
    for message in peer.on_topic_prefix(f"{TOPICS.base}/m2e/"):
        name = message.topic.rsplit("/", 1)[-1]
        if message.topic in replies:
            schemas = [asyncapi.REPLY_MESSAGES[replies[message.topic]]]
        elif message.topic.startswith(TOPICS.reply("")):
            schemas = list(asyncapi.REPLY_MESSAGES.values())
        else:
            assert name in asyncapi.M2E_MESSAGES, f"unexpected topic {message.topic}"
            schemas = [asyncapi.M2E_MESSAGES[name]]
        problems = [asyncapi.problems(schema, message.json()) for schema in schemas]
        assert not all(problems), f"{message.topic}: {problems}: {message.payload[:300]!r}"
        checked += 1
    return checked


def test_values_transaction_record_tools_and_schemas(
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: Broker,
    peer: EverestPeer,
    bridge: ApiClient,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asyncapi.require_definition()
    module = run_api_module(tmp_path, simulator, mosquitto.port, stop_record_wait_ms=1000)
    try:
        [key_message] = peer.wait_for(lambda: m2e(peer, "public_key_ocmf")[:1], 20, "the key")
        key = key_message.json()
        replies: dict[str, str] = {}
        transaction_id = str(uuid.uuid4())
        topic = bridge.send("start_transaction", request(transaction_id))
        replies[topic] = "start_transaction"
        started = reply(peer, topic)
        assert started["status"] == "OK", started
        topic = bridge.send("stop_transaction", {"transaction_id": transaction_id})
        replies[topic] = "stop_transaction"
        stopped = reply(peer, topic)
        assert stopped["status"] == "OK", f"{stopped}\n{module.log_tail(40)}"
        record = stopped["signed_meter_value"]
        assert record["encoding_method"] == "OCMF"
        assert verify_ocmf(record["signed_meter_data"], key)

        # The tools in API mode: watch the values, start and stop as the bridge would.
        monkeypatch.setenv("EV_MQTT_EXTERNAL_PREFIX", EXTERNAL_PREFIX)
        tool = ["--everest-api", "--module-id", MODULE, "--broker-host", mosquitto.host]
        tool += ["--broker-port", str(mosquitto.port)]
        watched = run_cli(["watch", *tool, "--count", "1"], capsys)
        assert watched.returncode == 0, watched.stderr
        assert len(watched.stdout.splitlines()) == 2, watched.stdout
        # Without --everest-api: watch names the protocol the module does speak.
        unmoded = run_cli(["watch", *tool[1:], "--count", "1", "--timeout", "3"], capsys)
        assert unmoded.returncode == 3
        assert unmoded.stderr.strip() == (
            f"lem-dcbm watch: module {MODULE} serves EVerest's powermeter API (values on "
            f"{TOPICS.m2e('powermeter_values')}), not the module protocol: add --everest-api"
        )
        for command in ("start_transaction", "stop_transaction"):
            called = run_cli(["call", command, *tool, "--transaction-id", "cli-1"], capsys)
            assert called.returncode == 0, called
            assert json.loads(called.stdout)["status"] == "OK"

        # A stop without replyTo is carried out; its record goes the late-record road.
        quiet_id = str(uuid.uuid4())
        topic = bridge.send("start_transaction", request(quiet_id))
        replies[topic] = "start_transaction"
        assert reply(peer, topic)["status"] == "OK"
        stop_body = {"payload": {"transaction_id": quiet_id}}
        bridge.publish_raw(TOPICS.e2m("stop_transaction"), json.dumps(stop_body).encode())
        quiet_topic = f"{EXTERNAL_PREFIX}lem_dcbm/{MODULE}/records/{quiet_id}"
        [quiet] = peer.wait_for(lambda: peer.on_topic(quiet_topic), 10, "the unanswered record")
        assert verify_ocmf(quiet.json()["signed_meter_value"]["signed_meter_data"], key)

        # The late-record road: a record that comes after the stop's answer.
        late_id = str(uuid.uuid4())
        topic = bridge.send("start_transaction", request(late_id))
        replies[topic] = "start_transaction"
        assert reply(peer, topic)["status"] == "OK"
        simulator.set_faults(http_status=500, paths=OCMF_PATHS, for_ms=2000)
        topic = bridge.send("stop_transaction", {"transaction_id": late_id})
        replies[topic] = "stop_transaction"
        late = reply(peer, topic)
        record_topic = f"{EXTERNAL_PREFIX}lem_dcbm/{MODULE}/records/{late_id}"
        assert late["status"] == "UNEXPECTED_ERROR", late
        assert record_topic in late["error"], late
        [published] = peer.wait_for(lambda: peer.on_topic(record_topic), 20, "the late record")
        assert verify_ocmf(published.json()["signed_meter_value"]["signed_meter_data"], key)

        # 1 Hz on the beat (the module publishes on a drift-free schedule), and the check
        # well below the bridge's default cfg_communication_check_to_s of 5 s.
        values = m2e(peer, "powermeter_values")
        assert len(values) >= 5, len(values)
        assert 0.9 <= statistics.mean(gaps(values)) <= 1.1, gaps(values)
        checks = m2e(peer, "communication_check")
        assert len(checks) >= 5, len(checks)
        assert all(m.json() is True for m in checks)
        assert max(gaps(checks)) < 2.5, gaps(checks)
        # A bridge (or backend) that subscribes later gets the key and the status: retained.
        with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE) as later:
            later.subscribe(f"{EXTERNAL_PREFIX}#")
            status_at = status_topic(EXTERNAL_PREFIX, MODULE)
            [status] = later.wait_for(lambda: later.on_topic(status_at), 5, "the status")
            [kept_key] = later.wait_for(lambda: later.on_topic(key_message.topic), 5, "the key")
        for message in peer.on_topic(status_at):
            jsonschema.validate(message.json(), status_schema())
        assert status.retain
        assert kept_key.retain
        assert kept_key.json() == key
        assert status.json()["billing_possible"] is True, status.json()
        assert status.json()["everest_heartbeat"] == "ok", status.json()
        # Nothing on the module protocol in this mode.
        assert peer.on_topic_prefix(f"everest/modules/{MODULE}/") == []
        assert assert_all_sent_messages_valid(peer, replies) >= 10
        # Its last word at a clean exit: offline, so no one reads an old status as current.
        assert module.terminate() == 0, module.log_tail(40)
        status_at = status_topic(EXTERNAL_PREFIX, MODULE)
        peer.wait_for(lambda: peer.on_topic(status_at)[-1].json()["online"] is False, 5)
    finally:
        module.stop()


def test_request_sent_during_a_broker_cut_is_answered_after_reconnect(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer, bridge: ApiClient
) -> None:
    asyncapi.require_definition()
    with TcpProxy(mosquitto.host, mosquitto.port) as link:
        module = run_api_module(tmp_path, simulator, link.port)
        try:
            peer.wait_for(lambda: m2e(peer, "public_key_ocmf"), 20, "the key")
            peer.wait_for(lambda: m2e(peer, "communication_check"), 10, "a check")
            wait_until(lambda: "heartbeat seen" in module.log(), 5, what="the first heartbeat")
            log_before = len(module.log())
            link.cut()
            wait_until(
                lambda: "disconnected from the MQTT broker" in module.log()[log_before:],
                2,
                what="the module to notice the cut",
            )
            transaction_id = str(uuid.uuid4())
            topic = bridge.send("start_transaction", request(transaction_id))
            # The bridge's heartbeat (every 0.5 s) cannot reach the module: missing after 1.5 s.
            wait_until(
                lambda: "heartbeat stopped" in module.log()[log_before:],
                6,
                what="the missing heartbeat to be logged",
            )
            assert peer.on_topic(topic) == [], "answered while cut off"
            link.restore()
            restored_at = time.monotonic()
            answer = reply(peer, topic, timeout=15)
            assert answer["status"] == "OK", answer
            assert peer.on_topic(topic)[0].received_at - restored_at < 10
            wait_until(
                lambda: "heartbeat is back" in module.log()[log_before:],
                5,
                what="the heartbeat's return to be logged",
            )
            assert simulator.state()["running_transaction"] == transaction_id
            # The broker published the will when the link broke; the module is back online.
            status_at = status_topic(EXTERNAL_PREFIX, MODULE)
            assert False in [m.json()["online"] for m in peer.on_topic(status_at)]
            peer.wait_for(lambda: peer.on_topic(status_at)[-1].json()["online"], 5, "online")
            log = module.log()[log_before:]
            assert log.count("heartbeat stopped") == 1
            assert log.count("heartbeat is back") == 1
            # Exactly once: no second reply arrives with the checks that follow.
            checks = len(m2e(peer, "communication_check"))
            peer.wait_for(lambda: len(m2e(peer, "communication_check")) > checks + 1, 5)
            assert len(peer.on_topic(topic)) == 1
            assert_all_sent_messages_valid(peer, {topic: "start_transaction"})
        finally:
            assert module.terminate() == 0, module.log_tail(40)


# --- fuzzing the e2m topics -------------------------------------------------------------

FUZZ_EXAMPLES = 1000
#: Requests published before waiting for their replies: fewer than the module's queue
#: limit (32), so none is turned away for a full queue.
FUZZ_BATCH = 25
E2M_NAMES = ("start_transaction", "stop_transaction", "heartbeat")


#: Small values keep generation fast (a thousand examples in a couple of seconds); the
#: edge cases (deep nesting, a payload over the size limit, a lone surrogate) are drawn
#: from constants.
SMALL_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)
SMALL_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | SMALL_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SMALL_TEXT, inner, max_size=3),
    max_leaves=6,
)
EDGES = st.sampled_from([fuzz.DEEP.format(40), fuzz.DEEP.format(1200), "x" * 70_000, "\ud800"])
VALUES = SMALL_JSON | EDGES


@st.composite
def start_payloads(draw: st.DrawFn) -> Any:
    """A start request, valid or broken in one member."""
    value: dict[str, Any] = request(draw(SMALL_TEXT))
    key = draw(st.sampled_from([None, *value, "tariff_text", "identification_level"]))
    if key is not None:
        if draw(st.booleans()):
            value.pop(key, None)
        else:
            value[key] = draw(VALUES)
    return value


PAYLOADS = st.one_of(
    VALUES,
    start_payloads(),
    st.fixed_dictionaries({"transaction_id": VALUES}),
    st.just({"transaction_id": "not-a-running-transaction"}),
)


@st.composite
def e2m_messages(draw: st.DrawFn, tokens: Iterator[int]) -> tuple[str, bytes, str | None]:
    """(name, payload, the reply topic of a well-formed request or None)."""
    name = draw(st.sampled_from(E2M_NAMES))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return name, draw(st.binary(max_size=100)), None
    if kind == 1:
        return name, fuzz._dumps(draw(VALUES)), None
    body: dict[str, Any] = {}
    reply_to: str | None = None
    headers = draw(st.integers(0, 5))
    if headers >= 2:
        reply_to = TOPICS.reply(f"fuzz-{next(tokens)}")
        body["headers"] = {"replyTo": reply_to}
    elif headers == 1:
        body["headers"] = draw(VALUES)
    if draw(st.integers(0, 9)):
        body["payload"] = draw(PAYLOADS)
    if name == "heartbeat":
        reply_to = None  # a heartbeat is never answered
    return name, fuzz._dumps(body), reply_to


def test_fuzzed_e2m_payloads_never_crash_and_well_formed_requests_are_answered(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer, bridge: ApiClient
) -> None:
    asyncapi.require_definition()
    module = run_api_module(tmp_path, simulator, mosquitto.port)
    expected: dict[str, str] = {}
    sent = 0
    try:
        peer.wait_for(lambda: m2e(peer, "public_key_ocmf"), 20, "the key")

        def wait_for_replies() -> None:
            def unanswered() -> list[str]:
                return [topic for topic in expected if not peer.on_topic(topic)]

            if peer.wait_for_optional(lambda: not unanswered(), 20) is None:
                raise AssertionError(f"no reply on {unanswered()}\n{module.log_tail(30)}")

        @settings(
            max_examples=FUZZ_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            # Every example goes to one module: no replay, no shrinking.
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(message=e2m_messages(itertools.count()))
        def publish(message: tuple[str, bytes, str | None]) -> None:
            nonlocal sent
            name, payload, reply_to = message
            bridge.publish_raw(TOPICS.e2m(name), payload)
            sent += 1
            if reply_to is not None:
                expected[reply_to] = name
            if sent % FUZZ_BATCH == 0:
                wait_for_replies()

        publish()
        wait_for_replies()
        assert sent >= FUZZ_EXAMPLES
        assert len(expected) > FUZZ_EXAMPLES // 3, len(expected)
        for topic in expected:
            assert len(peer.on_topic(topic)) == 1, f"{topic} answered more than once"
        assert module.process.poll() is None, module.log_tail(40)
        # Still serving: values keep coming and a proper request is answered.
        values = len(m2e(peer, "powermeter_values"))
        peer.wait_for(lambda: len(m2e(peer, "powermeter_values")) > values, 5, "a value")
        topic = bridge.send("stop_transaction", {"transaction_id": ""})
        assert reply(peer, topic)["status"] in ("OK", "UNEXPECTED_ERROR")
        expected[topic] = "stop_transaction"
        assert_all_sent_messages_valid(peer, expected)
        assert "Traceback" not in module.log(), module.log_tail(60)
        # Killed, the module says nothing more; the broker publishes its last will.
        status_at = status_topic(EXTERNAL_PREFIX, MODULE)
        assert peer.on_topic(status_at)[-1].json()["online"] is True
        module.kill()
        [*_, will] = peer.wait_for(
            lambda: [m for m in peer.on_topic(status_at) if not m.json()["online"]], 10, "the will"
        )
        assert will.json()["billing_possible"] is False
    finally:
        module.stop()
