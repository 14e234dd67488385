"""API mode against a real mosquitto: the module as a client of EVerest's powermeter API.

The test plays the ``powermeter_API`` bridge the way the framework's request helper does
(``{"headers": {"replyTo": ...}, "payload": ...}``, a fresh reply topic per request) and
records everything on ``everest_api/#`` and under the external prefix. Every message the
module sends is checked against the AsyncAPI definition in ``../shared``.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.config import BrokerSettings
from lem_dcbm.everest_api.client import ApiClient
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
from tests.support import asyncapi
from tests.support.everest_peer import EverestPeer, Received
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: The id of the powermeter_API module in EVerest's config (and of the module's entry).
MODULE = "pm_api"
TOPICS = ApiTopics(MODULE)
EXTERNAL_PREFIX = "ext/"
OCMF_PATHS = ["/v1/ocmf", "/v2/ocmf"]


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE) as started:
        started.subscribe("everest_api/#")
        started.subscribe(f"{EXTERNAL_PREFIX}#")
        yield started


@pytest.fixture
def bridge(mosquitto: Broker) -> Iterator[ApiClient]:
    """The bridge's heartbeat, every 0.5 s, as long as the test runs."""
    client = ApiClient(BrokerSettings(host=mosquitto.host, port=mosquitto.port), MODULE)
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

    ``replies`` maps each reply topic to its request's name.
    """
    checked = 0
    for message in peer.on_topic_prefix(f"{TOPICS.base}/m2e/"):
        name = message.topic.rsplit("/", 1)[-1]
        if message.topic in replies:
            schema = asyncapi.REPLY_MESSAGES[replies[message.topic]]
        else:
            assert name in asyncapi.M2E_MESSAGES, f"unexpected topic {message.topic}"
            schema = asyncapi.M2E_MESSAGES[name]
        problems = asyncapi.problems(schema, message.json())
        assert not problems, f"{message.topic}: {problems}: {message.payload[:300]!r}"
        checked += 1
    return checked


def test_values_transaction_record_and_schemas(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer, bridge: ApiClient
) -> None:
    asyncapi.require_definition()
    module = run_api_module(tmp_path, simulator, mosquitto.port, stop_record_wait_ms=1000)
    try:
        [key_message] = peer.wait_for(lambda: m2e(peer, "public_key_ocmf")[:1], 20, "the key")
        key = key_message.json()
        values = peer.wait_for(
            lambda: m2e(peer, "powermeter_values")[4:] and m2e(peer, "powermeter_values"),
            10,
            "five values",
        )
        # 1 Hz on the beat: the module publishes on a drift-free schedule.
        assert 0.9 <= statistics.mean(gaps(values[-5:])) <= 1.1, gaps(values)
        checks = peer.wait_for(
            lambda: m2e(peer, "communication_check")[2:] and m2e(peer, "communication_check"),
            10,
            "three checks",
        )
        assert all(m.json() is True for m in checks)
        # Well below the bridge's default cfg_communication_check_to_s of 5 s.
        assert max(gaps(checks)) < 2.5, gaps(checks)

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

        # A bridge (or backend) that subscribes later gets the key and the status: retained.
        with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE) as later:
            later.subscribe("everest_api/#")
            later.subscribe(f"{EXTERNAL_PREFIX}#")
            status_at = status_topic(EXTERNAL_PREFIX, MODULE)
            [status] = later.wait_for(lambda: later.on_topic(status_at), 5, "the status")
            [kept_key] = later.wait_for(lambda: later.on_topic(key_message.topic), 5, "the key")
        assert status.retain
        assert kept_key.retain
        assert kept_key.json() == key
        assert status.json()["billing_possible"] is True, status.json()
        assert status.json()["everest_heartbeat"] == "ok", status.json()
        # Nothing on the module protocol in this mode.
        assert peer.on_topic_prefix(f"everest/modules/{MODULE}/") == []
        assert assert_all_sent_messages_valid(peer, replies) >= 10
    finally:
        assert module.terminate() == 0, module.log_tail(40)


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
            # The bridge's heartbeat cannot reach the module: missing after 3 s, logged once.
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
