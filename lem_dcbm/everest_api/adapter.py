"""``ApiAdapter``: the module as a client of EVerest's powermeter API.

It offers the service what :class:`lem_dcbm.everest.adapter.EverestAdapter` offers (the
core's outputs, the late-record road, connect and close), over the topics of a
``powermeter_API`` bridge instead of the module protocol. The bus is the same
``MqttBus``: persistent session, QoS 2 subscriptions, reconnect with backoff, so a request
sent while the link was cut is delivered, and answered, after it comes back.

Threads: the bus's two (network, dispatch: heartbeat and queueing of requests), the
request worker, and ``api-pulse``, which sends ``communication_check`` every
``COMMUNICATION_CHECK_INTERVAL_S`` and checks EVerest's heartbeat.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from lem_dcbm.clock import Clock, SystemClock, rfc3339
from lem_dcbm.config import BrokerSettings
from lem_dcbm.core.ports import (
    ConfigChangeHandler,
    EverestOutputs,
    PowermeterHandlers,
    RecordLookup,
)
from lem_dcbm.core.results import PowermeterValue
from lem_dcbm.everest import shapes, validation
from lem_dcbm.everest.bus import BrokerUnavailable, MqttBus, stable_client_id
from lem_dcbm.everest_api import codecs
from lem_dcbm.everest_api.conditions import ConditionBoard
from lem_dcbm.everest_api.heartbeat import HeartbeatWatch
from lem_dcbm.everest_api.requests import RequestWorker
from lem_dcbm.everest_api.topics import (
    API_BASE,
    COMMUNICATION_CHECK,
    HEARTBEAT,
    POWERMETER_VALUES,
    PUBLIC_KEY_OCMF,
    ApiTopics,
    reply_topic,
    status_topic,
)
from lem_dcbm.json_types import JsonMapping, JsonObject
from lem_dcbm.records.late_record import KeptRecord, late_record_message, late_record_topic
from lem_dcbm.retry import RetryPolicy

_LOGGER = logging.getLogger(__name__)

#: How often ``communication_check`` goes out. The bridge raises CommunicationFault after
#: ``cfg_communication_check_to_s`` (default 5 s) without one: a check every second leaves
#: room for four lost or late ones before that.
COMMUNICATION_CHECK_INTERVAL_S = 1.0


class ApiAdapter:
    """One ``powermeter`` on a ``powermeter_API`` bridge, named by the bridge's module id."""

    #: Nobody asks again for a stop whose answer was lost: its record goes the late road.
    unanswered_stop_asked_again = False

    def __init__(
        self,
        broker: BrokerSettings,
        module_id: str,
        handlers: PowermeterHandlers,
        *,
        clock: Clock | None = None,
        client_id: str | None = None,
        backoff: RetryPolicy | None = None,
        check_interval_s: float = COMMUNICATION_CHECK_INTERVAL_S,
        reply_prefixes: tuple[str, ...] = (),
    ) -> None:
        """``reply_prefixes``: topics a request's replyTo may start with besides the API's
        own reply space (config key ``api_reply_topics``; ``#`` for any)."""
        self.topics = ApiTopics(module_id, broker.external_prefix)
        self._clock = clock or SystemClock()
        self._external_prefix = broker.external_prefix
        self._check_interval_s = check_interval_s
        #: The module's own retained status: conditions EVerest cannot be told through the API.
        self.status_topic = status_topic(broker.external_prefix, module_id)
        self._board = ConditionBoard(module_id, self._publish_status, self._clock)
        # The broker tells of a module that dies or loses its link: its last will.
        will = (self.status_topic, codecs.encode(self._board.offline_document()))
        self._bus = MqttBus(
            broker,
            client_id or stable_client_id(f"{API_BASE}/", module_id),
            backoff=backoff,
            will=will,
        )
        self._requests = RequestWorker(
            self.topics,
            handlers,
            self._publish_reply,
            refusal=self._board.refusal,
            unanswered_stop=self._record_without_reply,
            reply_prefixes=reply_prefixes,
        )
        self._record_lookup: RecordLookup = lambda transaction_id: None
        for topic in self._requests.topics():
            self._bus.subscribe(topic, self._requests.submit)
        self._resumed: list[Callable[[], None]] = []
        self._heartbeat = HeartbeatWatch(
            module_id,
            self.topics.e2m(HEARTBEAT),
            self._clock,
            on_change=self._board.set_heartbeat,
            on_resumed=self._run_resumed,
        )
        self._bus.subscribe(self.topics.e2m(HEARTBEAT), lambda m: self._heartbeat.beat(m.payload))
        # A link lost for a while made the broker publish the will: online again.
        self._bus.on_connected(self._republish_status)
        #: No manager in this mode: set only by ``close`` (the service waits on it).
        self.shutdown_requested = threading.Event()
        self._pulse_stop = threading.Event()
        self._pulse: threading.Thread | None = None
        self._withheld = False
        #: The meter's key is known once the meter answered: no check before that, so
        #: EVerest keeps its initial CommunicationFault until the meter is ready.
        self._meter_ready = threading.Event()
        self._invalid_logged = False

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._bus.connected

    @property
    def command_running(self) -> bool:
        """True while a request is being carried out."""
        return self._requests.running

    @property
    def commands_waiting(self) -> int:
        """Requests received and waiting behind the one in progress."""
        return self._requests.waiting

    @property
    def board(self) -> ConditionBoard:
        """The conditions the API cannot carry."""
        return self._board

    # --- life cycle ------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raise ``BrokerUnavailable`` when the broker stays away."""
        self._requests.start()
        try:
            self._bus.connect(timeout_s)
        except BrokerUnavailable:
            self._requests.stop(0.1)
            raise

    def announce_ready(self) -> None:
        """Publish the status and start the communication check."""
        self._publish_status(self._board.document())
        if self._pulse is None:
            self._pulse = threading.Thread(target=self._beat, name="api-pulse", daemon=True)
            self._pulse.start()
        _LOGGER.info(
            "module %s serving EVerest's powermeter API on %s/ (status on %s)",
            self.topics.module_id,
            self.topics.base,
            self.status_topic,
        )

    def wait_global_ready(self, stop: threading.Event) -> bool:
        """No manager handshake in this mode: ready at once unless stopped."""
        return not stop.is_set()

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after every (re)connect and when a (new) bridge shows up."""
        self._bus.on_connected(callback)
        self._resumed.append(callback)

    def close(self, timeout_s: float = 5.0, *, flush_s: float | None = None) -> None:
        """Finish the request in flight (up to ``timeout_s``), answer it, disconnect.

        ``communication_check`` is never set to false: a module that is gone must become
        a CommunicationFault inside EVerest, not a silenced check.
        """
        self.shutdown_requested.set()
        self._pulse_stop.set()
        self._requests.stop(timeout_s)
        if self._pulse is not None:  # it had said it was online
            self._publish_status(self._board.offline_document())
        self._bus.close(timeout_s if flush_s is None else flush_s)

    # --- the core's outputs -------------------------------------------------------------

    def publish_powermeter(self, value: PowermeterValue) -> bool:
        """Publish ``m2e/powermeter_values``; dropped while offline or when malformed."""
        return self._publish_values(shapes.powermeter_var(value))

    def _publish_values(self, value: JsonObject) -> bool:
        problem = validation.check_var("powermeter", value)
        if problem is not None:
            if not self._invalid_logged:
                self._invalid_logged = True
                _LOGGER.error("not publishing powermeter_values, it breaks the API: %s", problem)
            return False
        return self._bus.publish(
            self.topics.m2e(POWERMETER_VALUES), codecs.encode(value), drop_when_offline=True
        )

    def publish_public_key_ocmf(self, key: str) -> bool:
        """Publish ``m2e/public_key_ocmf``, retained: a bridge that starts later gets it too."""
        self._meter_ready.set()
        return self._bus.publish(
            self.topics.m2e(PUBLIC_KEY_OCMF), codecs.encode(key), qos=1, retain=True
        )

    def raise_error(self, name: str, sub_type: str, message: str, severity: str = "High") -> None:
        """Keep the condition on the status board (the API has no error path)."""
        self._board.raise_error(name, sub_type, message, severity)

    def clear_error(self, name: str, sub_type: str) -> None:
        """Clear the condition on the status board."""
        self._board.clear_error(name, sub_type)

    # --- late records ------------------------------------------------------------------

    def late_record_topic(self, transaction_id: str) -> str:
        """The retained topic that carries the record of ``transaction_id``."""
        return late_record_topic(self._external_prefix, self.topics.module_id, transaction_id)

    def publish_late_record(self, record: KeptRecord, published_at: str) -> bool:
        """Publish a kept record retained with QoS 1 (queued while the broker is away)."""
        message = late_record_message(
            record, module_id=self.topics.module_id, published_at=published_at
        )
        topic = self.late_record_topic(record.transaction_id)
        sent = self._bus.publish(
            topic, json.dumps(message, ensure_ascii=True).encode(), qos=1, retain=True
        )
        if sent:
            _LOGGER.info("record of %s published on %s", record.transaction_id, topic)
        return sent

    def records_from(self, lookup: RecordLookup) -> None:
        """Where the record of a stop is found (the journal) when its reply had no topic."""
        self._record_lookup = lookup

    # --- what differs from the module protocol -------------------------------------------

    def condition_outputs(self, error_profile: str) -> EverestOutputs:
        """The adapter itself: the API has no error path, it keeps and reports every
        condition on its status board, whatever the error profile."""
        return self

    def watch_takeovers(self, holds_module_id: Callable[[], bool]) -> None:
        """Not watched in this mode: only the module protocol's connection carries the watch."""

    def serve_config_changes(self, handler: ConfigChangeHandler) -> None:
        """Nothing to serve: runtime changes come from the manager's config service, which
        only the module protocol reaches."""

    def _record_without_reply(self, transaction_id: str) -> None:
        """A stop carried out without ``replyTo``: its record goes the late-record road."""
        record = self._record_lookup(transaction_id) if transaction_id else None
        if record is None:
            _LOGGER.warning(
                "the record of the stop of %r had no reply topic; it is in the journal "
                "(lem-dcbm records)",
                transaction_id,
            )
            return
        self.publish_late_record(record, rfc3339(self._clock.utc_now()))

    # --- internals -----------------------------------------------------------------

    def _publish_reply(self, reply_to: str, payload: bytes) -> object:
        # QoS 2 and queued while the link is down: every reply goes out exactly once.
        return self._bus.publish(reply_topic(reply_to, self._external_prefix), payload)

    def _publish_status(self, document: JsonMapping) -> object:
        return self._bus.publish(self.status_topic, codecs.encode(document), qos=1, retain=True)

    def _republish_status(self) -> None:
        if self._pulse is not None and not self._pulse_stop.is_set():
            self._publish_status(self._board.document())

    def _run_resumed(self) -> None:
        for callback in list(self._resumed):
            callback()

    def pulse_once(self) -> None:
        """One beat of ``api-pulse``: check the heartbeat, send the check unless withheld."""
        self._heartbeat.check()
        if not self._meter_ready.is_set():
            return
        blocked = self._board.refusal() is not None
        if blocked != self._withheld:
            self._withheld = blocked
            _LOGGER.info(
                "communication_check %s",
                "withheld: EVerest will raise CommunicationFault" if blocked else "sent again",
            )
        if not blocked:
            self._bus.publish(self.topics.m2e(COMMUNICATION_CHECK), b"true", drop_when_offline=True)

    def _beat(self) -> None:
        while not self._pulse_stop.is_set():
            try:
                self.pulse_once()
            except Exception:
                _LOGGER.exception("the communication check failed")
            self._pulse_stop.wait(self._check_interval_s)
