"""A small EVerest consumer: subscribe to a module's vars and call its commands."""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lem_dcbm.config import BrokerSettings
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest.bus import tcp_no_delay
from lem_dcbm.everest.envelope import (
    CommandResult,
    EnvelopeError,
    cmd_payload,
    decode,
    parse_result,
)
from lem_dcbm.everest.topics import Topics

_LOGGER = logging.getLogger(__name__)


class ConsumerError(LemDcbmError):
    """The broker is unreachable or the module did not answer in time."""


class EverestConsumer:
    """Plays a consumer module (clean session) against one powermeter implementation."""

    def __init__(self, broker: BrokerSettings, module_id: str, *, origin: str = "lem_dcbm_cli"):
        self.topics = Topics(broker.prefix, module_id)
        self.origin = origin
        self._broker = broker
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{origin}-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            transport="unix" if broker.socket_path else "tcp",
        )
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = tcp_no_delay
        self._subacks: dict[int, threading.Event] = {}
        self._subscribed_topics: set[str] = set()
        self._connected = threading.Event()
        self._var_handlers: dict[str, Callable[[Any], None]] = {}
        self._results: dict[str, queue.SimpleQueue[CommandResult]] = {}
        self._lock = threading.Lock()

    def connect(self, timeout_s: float = 5.0) -> None:
        """Connect to the broker; raise ``ConsumerError`` when it does not answer."""
        try:
            if self._broker.socket_path:
                self._client.connect(self._broker.socket_path, 0)
            else:
                self._client.connect(self._broker.host, self._broker.port)
        except OSError as err:
            raise ConsumerError(f"broker {self._broker.describe()} unreachable: {err}") from err
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise ConsumerError(f"broker {self._broker.describe()} did not accept the connection")

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

    def on_var(self, name: str, handler: Callable[[Any], None]) -> None:
        """Call ``handler(value)`` for every publication of var ``name``."""
        topic = self.topics.var(name)
        self._var_handlers[topic] = handler
        self._client.subscribe(topic, qos=2)

    def call(self, command: str, args: dict[str, Any], timeout_s: float = 10.0) -> CommandResult:
        """Call ``command`` and wait for its result."""
        response_topic = self.topics.cmd_response(command, self.origin)
        call_id = str(uuid.uuid4())
        inbox: queue.SimpleQueue[CommandResult] = queue.SimpleQueue()
        with self._lock:
            self._results[call_id] = inbox
        self._subscribe(response_topic, timeout_s)
        self._client.publish(self.topics.cmd(command), cmd_payload(call_id, args, self.origin), 2)
        try:
            return inbox.get(timeout=timeout_s)
        except queue.Empty:
            raise ConsumerError(
                f"no answer to {command} from module {self.topics.module_id} "
                f"within {timeout_s:.0f} s"
            ) from None
        finally:
            with self._lock:
                self._results.pop(call_id, None)

    def _subscribe(self, topic: str, timeout_s: float) -> None:
        """Subscribe once per topic and wait for the broker's acknowledgement."""
        if topic in self._subscribed_topics:
            return
        acked = threading.Event()
        with self._lock:
            result, mid = self._client.subscribe(topic, qos=2)
            if mid is None:
                raise ConsumerError(f"could not subscribe to {topic}: {result}")
            self._subacks[mid] = acked
        if not acked.wait(timeout_s):
            raise ConsumerError(f"broker did not acknowledge the subscription to {topic}")
        self._subscribed_topics.add(topic)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, *_: Any) -> None:
        with self._lock:
            acked = self._subacks.pop(mid, None)
        if acked is not None:
            acked.set()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler = self._var_handlers.get(message.topic)
        payload = bytes(message.payload)
        try:
            if handler is not None:
                envelope = decode(payload)
                if isinstance(envelope.data, dict):
                    handler(envelope.data.get("data"))
                return
            result = parse_result(payload)
        except (EnvelopeError, ValueError) as err:
            _LOGGER.warning("ignoring a message on %s: %s", message.topic, err)
            return
        with self._lock:
            inbox = self._results.get(result.call_id)
        if inbox is not None:
            inbox.put(result)


def result_json(result: CommandResult) -> str:
    """The result as indented JSON: the retval, or the protocol error."""
    if result.error_type:
        return json.dumps(
            {"error_type": result.error_type, "error_message": result.error_message}, indent=2
        )
    return json.dumps(result.retval, indent=2, ensure_ascii=False)
