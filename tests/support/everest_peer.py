"""``EverestPeer``: a fake EVerest consumer module and a fake manager, over real MQTT.

As a consumer it calls the module's commands with the exact envelopes of EVerest's
framework and records the variables and errors the module publishes. As a manager it
publishes the retained settings topic, answers configuration requests in the recorded
transcripts' shape, records metadata and module-ready messages, and sends global ready
and shutdown. It records every configuration message whose ``msg_type`` the simulated
framework generation does not know, because the real manager would end on it.

It speaks MQTT through the package's ``MqttBus`` with a clean session.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from lem_dcbm import MODULE_NAME
from lem_dcbm.config import BrokerSettings
from lem_dcbm.everest.bus import Message, MqttBus

T = TypeVar("T")

CONFIG_REQUEST_TYPES = {"2026": "ConfigurationRequest", "0.25": "GetConfig"}
CONFIG_RESPONSE_TYPES = {"2026": "ConfigurationResponse", "0.25": "GetConfigResponse"}


def dumps(value: Any) -> bytes:
    """Serialise as the framework does (compact, sorted keys, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Received:
    """A message the peer received, with its ``time.monotonic()`` arrival time."""

    topic: str
    payload: bytes
    received_at: float
    retain: bool = False

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


@dataclass(frozen=True)
class VarSample:
    """One publication of a variable."""

    value: Any
    received_at: float


def parameters_from_values(
    values: Mapping[str, Any], datatypes: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The manager's ``"!module"`` list for ``values`` (datatype from the manifest or the value)."""

    def datatype(key: str, value: Any) -> str:
        if datatypes and key in datatypes:
            return datatypes[key]
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int):
            return "integer"
        if isinstance(value, float):
            return "number"
        return "string"

    return [
        {
            "characteristics": {"datatype": datatype(key, value), "mutability": "ReadOnly"},
            "name": key,
            "value": value,
        }
        for key, value in values.items()
    ]


class EverestPeer:
    """A fake consumer (``peer_id``) of ``module_id``'s implementation, and a fake manager."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        module_id: str = "powermeter_1",
        impl_id: str = "main",
        prefix: str = "everest/",
        peer_id: str = "evse_manager",
        module_name: str = MODULE_NAME,
        broker: BrokerSettings | None = None,
    ) -> None:
        """``broker`` gives credentials and TLS; its host, port and prefix are replaced."""
        self.host = host
        self.port = port
        self.module_id = module_id
        self.impl_id = impl_id
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.peer_id = peer_id
        self.module_name = module_name
        self.module_base = f"{self.prefix}modules/{module_id}"
        self.impl_base = f"{self.module_base}/impl/{impl_id}"
        self._lock = threading.Condition()
        self.messages: list[Received] = []
        self._results: dict[str, dict[str, Any]] = {}
        self.manager_generation: str | None = None
        self._manager_parameters: list[dict[str, Any]] = []
        self.config_requests: list[dict[str, Any]] = []
        #: Configuration messages the simulated manager would have died on.
        self.foreign_messages: list[Received] = []
        self._published_types: set[str] = set()
        self._bus = MqttBus(
            replace(broker or BrokerSettings(), host=host, port=port, prefix=self.prefix),
            f"peer-{uuid.uuid4().hex[:12]}",
            clean_session=True,
        )
        # Subscribed before connecting: start() returns once the broker confirmed them.
        self._bus.subscribe(f"{self.module_base}/#", self._on_message)
        self._bus.subscribe(f"{self.prefix}config/request", self._on_message)

    # --- connection ------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> EverestPeer:
        """Connect, subscribe to everything of the module, and wait for the subscription."""
        self._bus.connect(timeout)
        return self

    def stop(self) -> None:
        """Disconnect."""
        self._bus.close(2.0)

    def __enter__(self) -> EverestPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _publish(self, topic: str, payload: bytes, *, qos: int = 2, retain: bool = False) -> None:
        """Publish and wait until the broker has the message."""
        self._bus.publish(topic, payload, qos=qos, retain=retain)
        self._bus.flush(5)

    # --- recording -------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        received = Received(message.topic, message.payload, message.received_at, message.retain)
        with self._lock:
            self.messages.append(received)
            if "/response/" in message.topic:
                try:
                    result = json.loads(received.payload)["data"]["data"]
                    self._results[result["id"]] = result
                except (ValueError, KeyError, TypeError):
                    pass
            self._lock.notify_all()
        if message.topic == f"{self.prefix}config/request":
            self._answer_config_request(received)

    def wait_for(self, condition: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        """Wait until ``condition()`` (called under the lock) is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = condition()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or condition}"
                    )
                self._lock.wait(remaining)

    def wait_for_optional(self, condition: Callable[[], T], timeout: float) -> T | None:
        """Like ``wait_for`` but return None instead of failing: for checking an absence."""
        try:
            return self.wait_for(condition, timeout)
        except AssertionError:
            return None

    def on_topic(self, topic: str) -> list[Received]:
        """Every message received on ``topic`` so far."""
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def on_topic_prefix(self, prefix: str) -> list[Received]:
        """Every message received on a topic that starts with ``prefix``."""
        with self._lock:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def subscribe(self, topic: str) -> None:
        """Also record messages on ``topic`` (a filter), e.g. outside the module's topics."""
        self._bus.subscribe(topic, self._on_message)

    # --- consumer ---------------------------------------------------------------------

    def cmd_topic(self, cmd: str) -> str:
        """Request topic of ``cmd``."""
        return f"{self.impl_base}/cmd/{cmd}"

    def call_async(self, cmd: str, args: dict[str, Any], *, origin: str | None = None) -> str:
        """Publish a call in the framework's envelope; return its id."""
        call_id = str(uuid.uuid4())
        data = {"id": call_id, "args": args, "origin": origin or self.peer_id}
        self._bus.publish(self.cmd_topic(cmd), dumps({"msg_type": "Cmd", "data": data}))
        return call_id

    def result(self, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the result with ``call_id``: ``{"id", "origin", "retval"?, "error"?}``."""
        return self.wait_for(lambda: self._results.get(call_id), timeout, f"result {call_id}")

    def call(self, cmd: str, args: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Call ``cmd`` and return the whole result data object."""
        return self.result(self.call_async(cmd, args), timeout)

    def send_raw(self, topic: str, payload: bytes, qos: int = 2, *, retain: bool = False) -> None:
        """Publish raw bytes; ``topic`` is full or relative to the implementation (``cmd/x``)."""
        full = topic if topic.startswith(self.prefix) else f"{self.impl_base}/{topic}"
        self._publish(full, payload, qos=qos, retain=retain)

    def responses(self, cmd: str, origin: str | None = None) -> list[Received]:
        """Every response received for ``cmd`` addressed to ``origin`` (default: this peer)."""
        return self.on_topic(f"{self.cmd_topic(cmd)}/response/{origin or self.peer_id}")

    def vars(self, name: str) -> list[VarSample]:
        """Every publication of variable ``name`` so far."""
        return [
            VarSample(m.json()["data"]["data"], m.received_at)
            for m in self.on_topic(f"{self.impl_base}/var/{name}")
        ]

    def wait_for_var(self, name: str, count: int = 1, timeout: float = 10.0) -> list[VarSample]:
        """Wait until ``count`` publications of ``name`` have arrived; return them all."""
        topic = f"{self.impl_base}/var/{name}"
        self.wait_for(
            lambda: len([m for m in self.messages if m.topic == topic]) >= count,
            timeout,
            f"{count} publications of {name}",
        )
        return self.vars(name)

    def _errors(self, msg_type: str) -> list[dict[str, Any]]:
        prefix = f"{self.impl_base}/error/"
        with self._lock:
            found = [m.json() for m in self.messages if m.topic.startswith(prefix)]
        return [envelope["data"] for envelope in found if envelope["msg_type"] == msg_type]

    @property
    def errors_raised(self) -> list[dict[str, Any]]:
        """Data of every ``RaiseError`` received."""
        return self._errors("RaiseError")

    @property
    def errors_cleared(self) -> list[dict[str, Any]]:
        """Data of every ``ClearError`` received."""
        return self._errors("ClearError")

    # --- manager ---------------------------------------------------------------------

    def act_as_manager(
        self, generation: str, parameters: list[dict[str, Any]], *, publish_settings: bool = True
    ) -> None:
        """Answer configuration requests as the manager of ``generation`` (``2026``/``0.25``)."""
        self.manager_generation = generation
        self._manager_parameters = parameters
        if publish_settings:
            settings = {
                "prefix": "/opt/everest",
                "validate_schema": False,
                "forward_exceptions": False,
            }
            payload = dumps({"msg_type": CONFIG_RESPONSE_TYPES[generation], "data": settings})
            self._publish(f"{self.prefix}settings", payload, retain=True)

    def publish_types(self, types: Mapping[str, Mapping[str, Any]]) -> None:
        """Publish type files ``{name: {TypeName: schema}}`` retained, as the 2026 manager does."""
        generation = self.manager_generation or "2026"
        for name, body in types.items():
            payload = dumps({"msg_type": CONFIG_RESPONSE_TYPES[generation], "data": body})
            self._publish(f"{self.prefix}type_definitions/{name}", payload, retain=True)
            self._published_types.add(name)

    def clear_retained(self) -> None:
        """Clear the retained settings (and types), as the manager does before global ready."""
        self._publish(f"{self.prefix}settings", b"", retain=True)
        for name in sorted(self._published_types):
            self._publish(f"{self.prefix}type_definitions/{name}", b"", retain=True)
        self._published_types.clear()

    def _answer_config_request(self, received: Received) -> None:
        generation = self.manager_generation
        if generation is None:
            return
        try:
            request = received.json()
        except ValueError:
            return
        with self._lock:
            self.config_requests.append(request)
            if request.get("msg_type") != CONFIG_REQUEST_TYPES[generation]:
                self.foreign_messages.append(received)
                self._lock.notify_all()
                return
        origin = request["data"]["origin"]
        data = {
            "response": {
                "data": {
                    "mappings": {origin: None},
                    "module_config": {
                        "access": None,
                        "configuration_parameters": {
                            "!module": self._manager_parameters,
                            "main": [],
                        },
                        "connections": {},
                        "mapping": None,
                        "module_id": origin,
                        "module_name": self.module_name,
                        "standalone": False,
                        "telemetry_enabled": False,
                    },
                },
                "type": "Module",
            },
            "status": "Ok",
            "status_info": "",
            "type": "Get",
        }
        payload = dumps({"msg_type": CONFIG_RESPONSE_TYPES[generation], "data": data})
        self._bus.publish(f"{self.prefix}modules/{origin}/response", payload)

    def set_config(self, name: str, value: str, timeout: float = 10.0) -> dict[str, Any]:
        """Forward a runtime change as the 2026 manager does; return the module's answer data."""
        identifier = {"configuration_parameter_name": name, "module_id": self.module_id}
        request = {"identifier": identifier, "value": value}
        payload = dumps({"msg_type": "ConfigurationRequest", "data": request})
        return self.set_config_raw(payload, timeout, what=f"{name} answer")

    def set_config_raw(
        self, payload: bytes, timeout: float = 10.0, *, what: str = "the set answer"
    ) -> dict[str, Any]:
        """Send ``payload`` as a set request; return the module's answer data."""
        topic = f"{self.module_base}/config/set_response"
        before = len(self.on_topic(topic))
        self._publish(f"{self.module_base}/config/set_request", payload)
        self.wait_for(lambda: len(self.on_topic(topic)) > before, timeout, what)
        answer: dict[str, Any] = self.on_topic(topic)[before].json()
        assert answer["msg_type"] == "ConfigurationResponse", answer
        data: dict[str, Any] = answer["data"]
        return data

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """Every metadata envelope the module published."""
        return [m.json() for m in self.on_topic(f"{self.module_base}/metadata")]

    @property
    def module_ready(self) -> list[dict[str, Any]]:
        """Every ModuleReady envelope the module published."""
        return [m.json() for m in self.on_topic(f"{self.module_base}/ready")]

    def send_global_ready(self) -> None:
        """Publish ``GlobalReady`` as the manager does."""
        payload = dumps({"msg_type": "GlobalReady", "data": True})
        self._publish(f"{self.prefix}ready", payload)

    def send_shutdown(self) -> None:
        """Publish the 2026 manager's shutdown signal (the bare text ``true``)."""
        self._publish(f"{self.prefix}shutdown", b"true")
