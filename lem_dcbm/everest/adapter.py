"""``EverestAdapter``: the powermeter implementation as other EVerest modules see it.

It joins the bus, the command dispatcher, the error reporter and the manager link
behind the few calls the module's core needs. The core supplies the two command
handlers and decides what to publish; this class knows every topic and envelope.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from lem_dcbm.config import BrokerSettings
from lem_dcbm.core.ports import (
    ConfigChangeHandler,
    EverestOutputs,
    PowermeterHandlers,
    RecordLookup,
)
from lem_dcbm.core.results import PowermeterValue
from lem_dcbm.everest import envelope, results, shapes
from lem_dcbm.everest.bus import BrokerUnavailable, Message, MqttBus, stable_client_id
from lem_dcbm.everest.commands import STALE_CALL_S, CommandDispatcher
from lem_dcbm.everest.config_changes import ConfigChanges
from lem_dcbm.everest.envelope import Generation
from lem_dcbm.everest.error_policy import PolicedOutputs
from lem_dcbm.everest.framework_types import FrameworkTypes
from lem_dcbm.everest.manager import DEFAULT_MODULE_NAME, ManagerLink
from lem_dcbm.everest.presence import TakeoverWatch, takeover_message
from lem_dcbm.everest.raised_errors import ErrorReporter
from lem_dcbm.everest.topics import Topics
from lem_dcbm.json_types import JsonObject
from lem_dcbm.records.late_record import KeptRecord, late_record_message, late_record_topic
from lem_dcbm.retry import RetryPolicy

_LOGGER = logging.getLogger(__name__)

_GENERATIONS = {
    "auto": None,
    "2026": Generation.FRAMEWORK_2026,
    "0.25": Generation.FRAMEWORK_0_25,
}


class EverestAdapter:
    """One ``powermeter`` implementation on the EVerest MQTT bus."""

    #: EvseManager asks again for a stop whose answer a stack restart lost.
    unanswered_stop_asked_again = True

    def __init__(
        self,
        broker: BrokerSettings,
        module_id: str,
        handlers: PowermeterHandlers,
        *,
        error_namespace: str = "powermeter",
        impl_id: str = "main",
        client_id: str | None = None,
        module_name: str = DEFAULT_MODULE_NAME,
        backoff: RetryPolicy | None = None,
        stale_call_s: float = STALE_CALL_S,
    ) -> None:
        """``stale_call_s``: starts the broker kept longer than this are refused, not run."""
        self.topics = Topics(broker.prefix, module_id, impl_id)
        self._external_prefix = broker.external_prefix
        self._client_id = client_id or stable_client_id(self.topics.prefix, module_id)
        self._bus = MqttBus(
            broker,
            self._client_id,
            backoff=backoff,
            marker_topic=f"{self.topics.prefix}lem_dcbm/{module_id}/session-marker",
        )
        #: The powermeter types of the running framework, once its manager published them.
        self.framework_types = FrameworkTypes()
        for topic, name in self.framework_types.topics(self.topics.prefix).items():
            self._bus.subscribe(topic, self._types_receiver(name))
        self._commands = CommandDispatcher(
            self.topics,
            self._publish_queued,
            schema=self.framework_types.schema,
            stale_after_s=stale_call_s,
        )
        self._commands.register(
            "start_transaction",
            lambda args: results.start_response(
                handlers.start_transaction(shapes.transaction_request(args["value"]))
            ),
        )
        self._commands.register(
            "stop_transaction",
            lambda args: results.stop_response(
                handlers.stop_transaction(str(args["transaction_id"]))
            ),
        )
        for topic in self._commands.command_topics():
            self._bus.subscribe(topic, self._commands.submit)
        self._errors = ErrorReporter(self.topics, self._publish_queued, namespace=error_namespace)
        self._manager = ManagerLink(
            self._bus, self.topics, module_name=module_name, provides={impl_id: "powermeter"}
        )
        #: Set when the manager asks every module to shut down.
        self.shutdown_requested: threading.Event = self._manager.shutdown_requested
        self._config_changes = ConfigChanges(
            self.topics, self._publish_queued, lambda: self._manager.generation
        )
        self._bus.subscribe(self.topics.config_set_request, self._config_changes.on_request)
        self._invalid_var_logged: set[str] = set()

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._bus.connected

    @property
    def commands_waiting(self) -> int:
        """Calls received and waiting behind the one in progress."""
        return self._commands.waiting

    # --- life cycle ------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raise ``BrokerUnavailable`` when the broker stays away."""
        self._commands.start()
        try:
            self._bus.connect(timeout_s)
        except BrokerUnavailable:
            self._commands.stop(0.1)
            raise

    def fetch_manager_config(
        self, timeout_s: float = 10.0, *, generation: str = "auto"
    ) -> list[JsonObject]:
        """Ask the manager for the configuration; return its ``"!module"`` parameter list.

        ``generation`` is ``auto`` (told by the manager's retained settings), ``2026`` or
        ``0.25``. Raises ``ManagerError`` when no answer comes within ``timeout_s``.
        """
        if generation not in _GENERATIONS:
            raise ValueError(f"generation must be one of {sorted(_GENERATIONS)}")
        response = self._manager.fetch_config(timeout_s, _GENERATIONS[generation])
        return response.parameters

    def announce_ready(self) -> None:
        """Publish the metadata and ``ModuleReady``."""
        self._manager.announce()

    def wait_global_ready(self, stop: threading.Event) -> bool:
        """Wait for the manager's ``GlobalReady``; False if stopped or shut down first."""
        return self._manager.wait_global_ready(stop)

    def on_link_lost(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (quick, on the network thread) when the broker link is lost."""
        self._bus.on_lost(callback)

    @property
    def client_id(self) -> str:
        """The MQTT client id of the module's connection."""
        return self._client_id

    def watch_takeovers(self, holds_module_id: Callable[[], bool]) -> None:
        """Name the cause when another client keeps taking the module's MQTT client id.

        ``holds_module_id``: the instance's other connection (its presence) is up, so the
        broker itself is fine.
        """
        watch = TakeoverWatch()
        module_id = self.topics.module_id

        def lost() -> None:
            if watch.lost(holds_module_id()):
                _LOGGER.error("%s", takeover_message(module_id, self._client_id))

        self.on_link_lost(lost)

    def serve_config_changes(self, handler: ConfigChangeHandler) -> None:
        """Answer the manager's runtime configuration changes (2026 framework) with ``handler``."""
        self._config_changes.serve(handler)

    def records_from(self, lookup: RecordLookup) -> None:
        """Nothing to do: every stop is answered on its response topic, late or not."""

    def condition_outputs(self, error_profile: str) -> EverestOutputs:
        """The adapter behind the error policy ``error_profile`` (which errors reach EVerest)."""
        return PolicedOutputs(self, error_profile)

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after every (re)connect, on the bus's dispatch thread."""
        self._bus.on_connected(callback)

    @property
    def command_running(self) -> bool:
        """True while a command is being carried out."""
        return self._commands.running

    def close(self, timeout_s: float = 5.0, *, flush_s: float | None = None) -> None:
        """Finish the command in flight (up to ``timeout_s``), answer it, disconnect.

        ``flush_s`` bounds the wait for the broker to take the last answers (default:
        ``timeout_s``).
        """
        self._commands.stop(timeout_s)
        self._bus.close(timeout_s if flush_s is None else flush_s)

    # --- variables ---------------------------------------------------------------------

    def publish_powermeter(self, value: PowermeterValue) -> bool:
        """Publish a measurement; dropped while offline or when it breaks the interface."""
        return self._publish_var("powermeter", shapes.powermeter_var(value))

    def publish_public_key_ocmf(self, key: str) -> bool:
        """Publish the meter's OCMF public key (dropped while offline)."""
        return self._publish_var("public_key_ocmf", key)

    def _publish_var(self, name: str, value: object) -> bool:
        schema = self.framework_types.schema()
        value, dropped, problem = schema.shape_and_check_var(name, value)
        if dropped and f"{name}:dropped" not in self._invalid_var_logged:
            self._invalid_var_logged.add(f"{name}:dropped")
            _LOGGER.info("publishing %s without %s: %s forbids it", name, dropped, schema.source)
        if problem is not None:
            # Once per variable: a mapping bug would otherwise flood the log every second.
            if name not in self._invalid_var_logged:
                self._invalid_var_logged.add(name)
                _LOGGER.error("not publishing %s, it breaks the interface: %s", name, problem)
            return False
        return self._bus.publish(
            self.topics.var(name), envelope.var_payload(value), drop_when_offline=True
        )

    # --- late records ------------------------------------------------------------------

    def late_record_topic(self, transaction_id: str) -> str:
        """The retained topic that carries the record of ``transaction_id``."""
        return late_record_topic(self._external_prefix, self.topics.module_id, transaction_id)

    def publish_late_record(self, record: KeptRecord, published_at: str) -> bool:
        """Publish a kept record retained with QoS 1 (queued while the broker is away)."""
        message = late_record_message(
            record, module_id=self.topics.module_id, published_at=published_at
        )
        payload = json.dumps(message, ensure_ascii=True).encode()
        topic = self.late_record_topic(record.transaction_id)
        sent = self._bus.publish(topic, payload, qos=1, retain=True)
        if sent:
            _LOGGER.info("record of %s published on %s", record.transaction_id, topic)
        return sent

    # --- errors --------------------------------------------------------------------

    def raise_error(self, name: str, sub_type: str, message: str, severity: str = "High") -> None:
        """Raise ``{namespace}/{name}`` unless that (name, sub_type) is raised already."""
        self._errors.raise_error(name, sub_type, message, severity)

    def clear_error(self, name: str, sub_type: str) -> None:
        """Clear ``{namespace}/{name}`` if it is raised."""
        self._errors.clear_error(name, sub_type)

    def set_error_namespace(self, namespace: str) -> None:
        """Raise errors as ``powermeter/...`` or ``generic/...`` from now on."""
        self._errors.set_namespace(namespace)

    def _types_receiver(self, name: str) -> Callable[[Message], None]:
        return lambda message: self.framework_types.receive(name, message.payload)

    def _publish_queued(self, topic: str, payload: bytes) -> bool:
        return self._bus.publish(topic, payload)
