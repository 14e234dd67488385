"""The 2026 framework's runtime set request and the module's set response, on the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lem_dcbm.everest.bus import Message
from lem_dcbm.everest.config_changes import (
    ConfigChanges,
    SetRequest,
    SetRequestError,
    parse_set_request,
)
from lem_dcbm.everest.envelope import Generation
from lem_dcbm.everest.topics import Topics

TOPICS = Topics("everest/", "powermeter_1")


def set_request(name: str, value: Any, **identifier: Any) -> bytes:
    """A forwarded set request exactly as MQTTCommunication.md (2026) shows it."""
    ident = {"module_id": "powermeter_1", "configuration_parameter_name": name, **identifier}
    data = {"identifier": ident, "value": value}
    return json.dumps({"msg_type": "ConfigurationRequest", "data": data}).encode()


class Manager:
    """Records the module's answers; ``generation`` is what the handshake settled on."""

    def __init__(self, generation: Generation | None = Generation.FRAMEWORK_2026) -> None:
        self.generation = generation
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.changes = ConfigChanges(TOPICS, self.publish, lambda: self.generation)

    def publish(self, topic: str, payload: bytes) -> bool:
        self.answers.append((topic, json.loads(payload)))
        return True

    def send(self, payload: bytes, *, retain: bool = False) -> dict[str, Any]:
        before = len(self.answers)
        self.changes.on_request(Message(TOPICS.config_set_request, payload, retain))
        assert len(self.answers) == before + 1
        topic, answer = self.answers[-1]
        assert topic == "everest/modules/powermeter_1/config/set_response"
        assert answer["msg_type"] == "ConfigurationResponse"
        data: dict[str, Any] = answer["data"]
        return data


def test_topics_are_the_frameworks() -> None:
    assert TOPICS.config_set_request == "everest/modules/powermeter_1/config/set_request"
    assert TOPICS.config_set_response == "everest/modules/powermeter_1/config/set_response"


def test_a_set_request_is_read_with_the_module_scope_by_default() -> None:
    assert parse_set_request(set_request("tariff_id", "3")) == SetRequest(
        "powermeter_1", "tariff_id", "!module", "3"
    )
    with_impl = set_request("tariff_id", "3", module_implementation_id="main")
    assert parse_set_request(with_impl).implementation_id == "main"
    for bad in (b"{", b'{"msg_type": "Cmd", "data": {}}', b'{"msg_type": "ConfigurationRequest"}'):
        with pytest.raises(SetRequestError):
            parse_set_request(bad)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (("Accepted", ""), "Accepted"),
        (("Rejected", "config key 'tariff_id': must be <= 4, got 9"), "Rejected"),
        (("RebootRequired", "config key 'port' needs a new connection"), "RebootRequired"),
    ],
)
def test_each_answer_has_the_frameworks_shape(answer: tuple[str, str], status: str) -> None:
    manager = Manager()
    asked: list[tuple[str, Any]] = []

    def handler(name: str, value: Any) -> tuple[str, str]:
        asked.append((name, value))
        return answer

    manager.changes.serve(handler)
    data = manager.send(set_request("tariff_id", "9"))
    assert asked == [("tariff_id", "9")]
    assert data == {
        "status": "Ok",
        "status_info": answer[1],
        "type": "Set",
        "response": {"status": status, "status_info": answer[1]},
    }


def test_requests_the_module_cannot_serve_are_rejected_with_a_reason() -> None:
    manager = Manager()
    data = manager.send(set_request("tariff_id", "3"))
    assert data["response"]["status"] == "Rejected"
    assert "still starting" in data["status_info"]
    manager.changes.serve(lambda name, value: ("Accepted", ""))
    data = manager.send(set_request("tariff_id", "3", module_implementation_id="main"))
    assert data["response"]["status"] == "Rejected"
    assert "module-level" in data["status_info"]
    data = manager.send(set_request("tariff_id", "3", module_id="other"))
    assert data["response"]["status"] == "Rejected"

    def broken(name: str, value: Any) -> tuple[str, str]:
        raise RuntimeError("boom")

    manager.changes.serve(broken)
    data = manager.send(set_request("tariff_id", "3"))
    assert data["response"] == {"status": "Rejected", "status_info": data["status_info"]}
    assert "boom" in data["status_info"]


def test_an_unreadable_request_gets_an_error_answer() -> None:
    manager = Manager()
    data = manager.send(b'{"msg_type": "ConfigurationRequest", "data": {"value": "1"}}')
    assert data["status"] == "Error"
    assert "identifier" in data["status_info"]
    assert data["response"]["status"] == "Rejected"


def test_under_the_0_25_framework_and_for_retained_messages_nothing_is_answered() -> None:
    old = Manager(Generation.FRAMEWORK_0_25)
    old.changes.serve(lambda name, value: ("Accepted", ""))
    old.changes.on_request(Message(TOPICS.config_set_request, set_request("tariff_id", "3")))
    assert old.answers == []
    new = Manager()
    new.changes.serve(lambda name, value: ("Accepted", ""))
    new.changes.on_request(
        Message(TOPICS.config_set_request, set_request("tariff_id", "3"), retain=True)
    )
    assert new.answers == []
