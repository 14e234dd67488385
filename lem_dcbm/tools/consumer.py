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

from lem_dcbm.config import BrokerSettings
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest.bus import BrokerRefused, BrokerUnavailable, Message, MqttBus
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
    """Plays a consumer module (clean session) against one powermeter implementation.

    With ``expiring_calls`` each call is published over MQTT 5 with a message expiry of
    its timeout: a module that is away when the caller gives up never gets the call
    later from its persistent session. A broker without MQTT 5 gets plain calls, with a
    warning.
    """

    def __init__(
        self,
        broker: BrokerSettings,
        module_id: str,
        *,
        origin: str = "lem_dcbm_cli",
        expiring_calls: bool = False,
    ):
        self.topics = Topics(broker.prefix, module_id)
        self.origin = origin
        self._broker = broker
        self._expiring = expiring_calls
        self._results: dict[str, queue.SimpleQueue[CommandResult]] = {}
        self._lock = threading.Lock()
        self._bus = self._new_bus()

    def _new_bus(self) -> MqttBus:
        bus = MqttBus(
            self._broker,
            f"{self.origin}-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            mqtt5=self._expiring,
        )
        # Subscribed before connecting: connect() returns once the broker confirmed it,
        # so no answer can arrive before someone listens for it.
        bus.subscribe(self.topics.cmd_response("+", self.origin), self._on_result)
        return bus

    def connect(self, timeout_s: float = 5.0) -> None:
        """Connect to the broker; raise ``ConsumerError`` when it does not answer."""
        try:
            connect_bus(self._bus, timeout_s)
        except ConsumerError as err:
            # Only a broker that does not speak MQTT 5 gets a second, plain attempt.
            refused = isinstance(err.__cause__, BrokerRefused)
            if not (self._expiring and refused and "protocol version" in str(err).lower()):
                raise
            _LOGGER.warning(
                "the broker refused MQTT 5 (%s): calls cannot expire, so a call that times "
                "out may still reach the module later",
                err,
            )
            self._expiring = False
            self._bus = self._new_bus()
            connect_bus(self._bus, timeout_s)

    def close(self) -> None:
        """Disconnect."""
        self._bus.close()

    def on_var(self, name: str, handler: Callable[[object], None]) -> None:
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

    def call(self, command: str, args: dict[str, object], timeout_s: float = 10.0) -> CommandResult:
        """Call ``command`` and wait for its result."""
        call_id = str(uuid.uuid4())
        inbox: queue.SimpleQueue[CommandResult] = queue.SimpleQueue()
        with self._lock:
            self._results[call_id] = inbox
        # Whole seconds, never beyond the wait: the call is gone before the caller gives up.
        expiry_s = max(1, int(timeout_s)) if self._expiring else None
        self._bus.publish(
            self.topics.cmd(command),
            cmd_payload(call_id, args, self.origin),
            expiry_s=expiry_s,
        )
        try:
            return inbox.get(timeout=timeout_s)
        except queue.Empty:
            fate = (
                f"; the call expired in the broker after {expiry_s} s, so the module will not "
                "run it later (unless it received it in time)"
                if expiry_s is not None
                else "; the broker keeps the call for the module, which may still run it later"
            )
            raise ConsumerError(
                f"no answer to {command} from module {self.topics.module_id} "
                f"within {timeout_s:g} s on {self.topics.cmd(command)}{fate}"
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
