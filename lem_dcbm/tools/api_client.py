"""A small stand-in for the ``powermeter_API`` bridge: read the module's values, send requests.

Used by ``lem-dcbm watch``/``call --everest-api``, the demo and the tests. Requests go out
as the framework's ``AsyncApiRequestReply`` sends them: ``{"headers": {"replyTo": ...},
"payload": ...}`` with a fresh ``.../m2e/reply/{uuid}`` topic each. ``call`` has the
signature of :meth:`lem_dcbm.tools.consumer.EverestConsumer.call`, so the tools take
either.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

from lem_dcbm.config import BrokerSettings
from lem_dcbm.everest.bus import Message, MqttBus
from lem_dcbm.everest.envelope import CommandResult
from lem_dcbm.everest_api.topics import (
    HEARTBEAT,
    POWERMETER_VALUES,
    ApiTopics,
)
from lem_dcbm.tools.consumer import ConsumerError, connect_bus

_LOGGER = logging.getLogger(__name__)

#: The module protocol's var names, as the tools know them, and their API topics.
VAR_TOPICS = {"powermeter": POWERMETER_VALUES}


class ApiClient:
    """Plays the bridge (clean session) against one module in API mode."""

    def __init__(self, broker: BrokerSettings, module_id: str, *, origin: str = "lem_dcbm_cli"):
        self.topics = ApiTopics(module_id, broker.external_prefix)
        self.origin = origin
        self._bus = MqttBus(broker, f"{origin}-{uuid.uuid4().hex[:8]}", clean_session=True)
        self._replies: dict[str, queue.SimpleQueue[Any]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # Subscribed before connecting, so no reply can arrive before someone listens.
        self._bus.subscribe(self.topics.reply("+"), self._on_reply)

    def connect(self, timeout_s: float = 5.0) -> None:
        """Connect to the broker; raise ``ConsumerError`` when it does not answer."""
        connect_bus(self._bus, timeout_s)

    def close(self) -> None:
        """Stop the heartbeat, disconnect."""
        self._closed.set()
        self._bus.close()

    def on_var(self, name: str, handler: Callable[[object], None]) -> None:
        """Call ``handler(value)`` for every message on ``m2e/{name}`` (``powermeter``: values)."""

        def deliver(message: Message) -> None:
            try:
                value = json.loads(message.payload)
            except ValueError as err:
                _LOGGER.warning("ignoring a message on %s: %s", message.topic, err)
                return
            handler(value)

        self._bus.subscribe(self.topics.m2e(VAR_TOPICS.get(name, name)), deliver)

    def start_heartbeat(self, interval_s: float = 1.0) -> None:
        """Send ``e2m/heartbeat`` with increasing ids, as the bridge does, until closed."""

        def beat() -> None:
            beat_id = 0
            while not self._closed.is_set():
                self._bus.publish(self.topics.e2m(HEARTBEAT), str(beat_id).encode(), qos=0)
                beat_id += 1
                self._closed.wait(interval_s)

        threading.Thread(target=beat, name="api-heartbeat", daemon=True).start()

    def send(self, name: str, payload: object, *, token: str | None = None) -> str:
        """Send request ``name`` without waiting; return its reply topic."""
        reply_to = self.topics.reply(token or str(uuid.uuid4()))
        body = {"headers": {"replyTo": reply_to}, "payload": payload}
        self.publish_raw(self.topics.e2m(name), json.dumps(body).encode())
        return reply_to

    def publish_raw(self, topic: str, payload: bytes) -> None:
        """Publish any bytes with QoS 2 (a hostile or broken bridge, in tests)."""
        self._bus.publish(topic, payload)

    def request(self, name: str, payload: object, timeout_s: float = 10.0) -> object:
        """Send request ``name`` with ``payload``; return the decoded reply."""
        token = str(uuid.uuid4())
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            self._replies[token] = inbox
        self.send(name, payload, token=token)
        try:
            return inbox.get(timeout=timeout_s)
        except queue.Empty:
            raise ConsumerError(
                f"no reply to {name} from module {self.topics.module_id} within {timeout_s:.0f} s"
            ) from None
        finally:
            with self._lock:
                self._replies.pop(token, None)

    def call(self, command: str, args: object, timeout_s: float = 10.0) -> CommandResult:
        """Call like the module protocol's consumer: ``{"value": req}`` or ``{"transaction_id"}``.

        Other arguments are sent as the payload unchanged.
        """
        payload = args
        if command == "start_transaction" and isinstance(args, dict) and set(args) == {"value"}:
            payload = args["value"]
        reply = self.request(command, payload, timeout_s)
        return CommandResult("", self.origin, reply, True, None, None)

    def _on_reply(self, message: Message) -> None:
        token = message.topic.rsplit("/", 1)[-1]
        try:
            reply = json.loads(message.payload)
        except ValueError as err:
            _LOGGER.warning("ignoring a reply on %s: %s", message.topic, err)
            return
        with self._lock:
            inbox = self._replies.get(token)
        if inbox is not None:
            inbox.put(reply)
