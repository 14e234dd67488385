"""API mode: a request's replyTo cannot make the module publish outside the API's reply space.

Real mosquitto, the module as a process in API mode, the simulator over sockets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import Broker, Simulator, wait_until
from lem_dcbm.harness import transaction_request as request
from lem_dcbm.tools.api_client import ApiClient
from tests.integration import test_everest_api
from tests.integration.test_everest_api import (
    MODULE,
    TOPICS,
    reply,
    run_api_module,
)
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: A command topic of another module (EvseManager's), as a hostile replyTo would name it.
FOREIGN = "everest/modules/evse_manager/impl/evse/cmd"


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE) as started:
        started.subscribe("#")
        yield started


#: The bridge's heartbeat, as in the other API tests.
bridge = test_everest_api.bridge


def _send(bridge: ApiClient, name: str, payload: Any, reply_to: str) -> None:
    body = {"headers": {"replyTo": reply_to}, "payload": payload}
    bridge.publish_raw(TOPICS.e2m(name), json.dumps(body).encode())


def test_a_reply_to_outside_the_api_is_refused_and_logged_once_per_kind(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer, bridge: ApiClient
) -> None:
    module = run_api_module(tmp_path, simulator, mosquitto.port)
    try:
        peer.wait_for(lambda: peer.on_topic(TOPICS.m2e("public_key_ocmf")), 20, "the key")
        hostile = str(uuid.uuid4())
        for reply_to in (FOREIGN, f"{TOPICS.base}/e2m/stop_transaction", "x"):
            _send(bridge, "start_transaction", request(hostile), reply_to)
        _send(bridge, "stop_transaction", {"transaction_id": hostile}, FOREIGN)
        _send(bridge, "stop_transaction", {"no": "transaction id"}, FOREIGN)  # refused anyway
        # Requests run in order: once this one is answered, those before it were handled.
        fine = str(uuid.uuid4())
        topic = bridge.send("start_transaction", request(fine))
        assert reply(peer, topic)["status"] == "OK"
        topic = bridge.send("stop_transaction", {"transaction_id": fine})
        assert reply(peer, topic)["status"] == "OK"
        assert peer.on_topic(FOREIGN) == []
        assert peer.on_topic("x") == []
        # Its own request topic got only the three stops sent there, no reply.
        assert len(peer.on_topic(f"{TOPICS.base}/e2m/stop_transaction")) == 3
        log = module.log()
        # Once per kind at warning level; the ones after it at debug level only.
        warned = [line for line in log.splitlines() if " WARNING " in line]
        starts = [line for line in warned if "refused a start_transaction" in line]
        stops = [line for line in warned if "refused a stop_transaction" in line]
        assert len(starts) == 1, starts
        assert len(stops) == 1, stops
        assert "outside the API's reply topics" in starts[0]
        assert "api_reply_topics" in starts[0]
        # The hostile start was not carried out: the meter never saw its transaction.
        assert fine in log
        assert hostile not in log
    finally:
        module.stop()


def test_a_configured_prefix_is_allowed(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer, bridge: ApiClient
) -> None:
    module = run_api_module(
        tmp_path, simulator, mosquitto.port, api_reply_topics="site/replies/, other/"
    )
    try:
        peer.wait_for(lambda: peer.on_topic(TOPICS.m2e("public_key_ocmf")), 20, "the key")
        transaction_id = str(uuid.uuid4())
        _send(bridge, "start_transaction", request(transaction_id), "site/replies/1")
        assert reply(peer, "site/replies/1")["status"] == "OK"
        _send(bridge, "stop_transaction", {"transaction_id": transaction_id}, FOREIGN)
        topic = bridge.send("stop_transaction", {"transaction_id": transaction_id})
        assert reply(peer, topic)["status"] == "OK"
        assert peer.on_topic(FOREIGN) == []
        wait_until(lambda: "refused a stop_transaction" in module.log(), 5, what="the log")
    finally:
        module.stop()
