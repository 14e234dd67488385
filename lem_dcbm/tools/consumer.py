"""A small EVerest consumer: subscribe to a module's vars and call its commands.

It rides on the module's own ``MqttBus`` (with a clean session: the broker forgets it
when it leaves), so the tools, the demo, the benchmarks and the tests speak MQTT
through one client.
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
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest.bus import BrokerUnavailable, Message, MqttBus
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


def connect_bus(bus: MqttBus, timeout_s: float) -> None:
    """Connect a tool's bus; raise ``ConsumerError`` when the broker does not answer."""
    try:
        bus.connect(timeout_s)
    except BrokerUnavailable as err:
        raise ConsumerError(str(err)) from err


class EverestConsumer:
    """Plays a consumer module (clean session) against one powermeter implementation."""

    def __init__(self, broker: BrokerSettings, module_id: str, *, origin: str = "lem_dcbm_cli"):
        self.topics = Topics(broker.prefix, module_id)
        self.origin = origin
        self._bus = MqttBus(broker, f"{origin}-{uuid.uuid4().hex[:8]}", clean_session=True)
        self._results: dict[str, queue.SimpleQueue[CommandResult]] = {}
        self._lock = threading.Lock()
        # Subscribed before connecting: connect() returns once the broker confirmed it,
        # so no answer can arrive before someone listens for it.
        self._bus.subscribe(self.topics.cmd_response("+", origin), self._on_result)

    def connect(self, timeout_s: float = 5.0) -> None:
        """Connect to the broker; raise ``ConsumerError`` when it does not answer."""
        connect_bus(self._bus, timeout_s)

    def close(self) -> None:
        """Disconnect."""
        self._bus.close()

    def on_var(self, name: str, handler: Callable[[Any], None]) -> None:
        """Call ``handler(value)`` for every publication of var ``name``."""

        def deliver(message: Message) -> None:
            try:
                envelope = decode(message.payload)
            except (EnvelopeError, ValueError) as err:
                _LOGGER.warning("ignoring a message on %s: %s", message.topic, err)
                return
            if isinstance(envelope.data, dict):
                handler(envelope.data.get("data"))

        self._bus.subscribe(self.topics.var(name), deliver)

    def call(self, command: str, args: dict[str, Any], timeout_s: float = 10.0) -> CommandResult:
        """Call ``command`` and wait for its result."""
        call_id = str(uuid.uuid4())
        inbox: queue.SimpleQueue[CommandResult] = queue.SimpleQueue()
        with self._lock:
            self._results[call_id] = inbox
        self._bus.publish(self.topics.cmd(command), cmd_payload(call_id, args, self.origin))
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

    def _on_result(self, message: Message) -> None:
        try:
            result = parse_result(message.payload)
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
