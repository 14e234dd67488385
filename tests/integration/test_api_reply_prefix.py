"""API mode with an external prefix: replies reach the bridge under the prefix.

EVerest's powermeter_API bridge sends ``replyTo`` without ``mqtt_external_prefix`` but
listens only under it. Real mosquitto, the simulator and the module as a process; the
test sends requests the way the bridge does and listens where the bridge listens.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator
from lem_dcbm.harness import transaction_request as request
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.tools.api_client import ApiClient
from tests.integration.test_everest_api import (
    EXTERNAL_PREFIX,
    MODULE,
    TOPICS,
    bridge,  # noqa: F401 - the bridge's heartbeat
    run_api_module,
)
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def send_as_the_bridge(client: ApiClient, name: str, payload: object) -> tuple[str, str]:
    """Publish a request with an unprefixed replyTo; return it and where the bridge listens."""
    bare = f"everest_api/1/powermeter/{MODULE}/m2e/reply/{uuid.uuid4()}"
    body = {"headers": {"replyTo": bare}, "payload": payload}
    client.publish_raw(TOPICS.e2m(name), json.dumps(body).encode())
    return bare, f"{EXTERNAL_PREFIX}{bare}"


def test_replies_go_under_the_prefix_where_the_bridge_listens(
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: Broker,
    bridge: ApiClient,  # noqa: F811 - the fixture imported above
) -> None:
    with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE) as peer:
        peer.subscribe("#")
        module = run_api_module(tmp_path, simulator, mosquitto.port)
        try:
            [key] = peer.wait_for(
                lambda: peer.on_topic(TOPICS.m2e("public_key_ocmf"))[:1], 20, "the key"
            )
            transaction_id = str(uuid.uuid4())
            bare, listened = send_as_the_bridge(
                bridge, "start_transaction", request(transaction_id)
            )
            [started] = peer.wait_for(lambda: peer.on_topic(listened), 20, "the start's reply")
            assert started.json()["status"] == "OK", started.json()
            payload = {"transaction_id": transaction_id}
            stop_bare, listened = send_as_the_bridge(bridge, "stop_transaction", payload)
            [stopped] = peer.wait_for(lambda: peer.on_topic(listened), 20, "the stop's reply")
            answer = stopped.json()
            assert answer["status"] == "OK", answer
            assert verify_ocmf(answer["signed_meter_value"]["signed_meter_data"], key.json())
            # Nothing on the bare topics, where no bridge listens.
            assert peer.on_topic(bare) == []
            assert peer.on_topic(stop_bare) == []
        finally:
            assert module.terminate() == 0, module.log_tail(40)
