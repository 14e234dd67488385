"""``MqttBus``: the broker connection, over paho-mqtt 2.x.

Threads and their duties:

- paho's network thread moves bytes and reconnects after a loss; its callbacks put work
  on a queue, set events and choose the next reconnect delay (capped exponential
  backoff with jitter), nothing else.
- the dispatch worker takes messages and "connected" notices off the queue and runs
  the subscribed handlers and ``on_connected`` callbacks, one at a time.

The session is persistent (MQTT 3.1.1, no clean session, a stable client id) and every
subscription is QoS 2, so calls published while the module was cut off are delivered
after it reconnects; each such message says how long it can have waited
(``Message.queued_up_to_s``), so that a call kept too long is refused, not run late.
Subscriptions are renewed on every connect anyway, since a restarted broker may have
forgotten the session.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from lem_dcbm.broker_tls import broker_ssl_context
from lem_dcbm.config import BrokerSettings
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.retry import RetryPolicy

_LOGGER = logging.getLogger(__name__)
_PAHO_LOGGER = logging.getLogger(f"{__name__}.paho")


#: paho's error line when a TLS broker ends the connection with an alert.
_TLS_RECEIVE_FAILED = "failed to receive on socket: [SSL"
#: paho's error lines that repeat on every failed attempt; the bus reports the failure
#: itself, once, with its cause.
_PAHO_REPEATS = ("Client is not connected.", _TLS_RECEIVE_FAILED)


class _ReconnectNoise(logging.Filter):
    """Demote paho's per-attempt error lines to debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; these at debug, and only when debug is on."""
        if record.levelno == logging.ERROR and record.getMessage().startswith(_PAHO_REPEATS):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return _PAHO_LOGGER.isEnabledFor(logging.DEBUG)
        return True


_PAHO_LOGGER.addFilter(_ReconnectNoise())

#: Client ids longer than this are not guaranteed to be accepted by MQTT 3.1.1 brokers.
MAX_CLIENT_ID = 23


class BrokerUnavailable(LemDcbmError):
    """The broker could not be reached in time."""


class BrokerRefused(BrokerUnavailable):
    """The broker was reached but the link refused: wrong credentials or an untrusted TLS peer.

    Retrying helps only after someone fixes the configuration of either side.
    """


def stable_client_id(prefix: str, module_id: str) -> str:
    """A client id that stays the same for one module instance across restarts."""
    digest = hashlib.sha256(f"{prefix}\0{module_id}".encode()).hexdigest()
    return f"lemdcbm-{digest[: MAX_CLIENT_ID - len('lemdcbm-')]}"


#: How long after a connect the echo of the session marker is awaited at most.
BACKLOG_MARKER_WAIT_S = 5.0

#: Reconnect delays: doubling from 0.5 s, jittered. The maximum is small on purpose: the
#: broker is local, and a command waiting in the session should be answered within seconds
#: of the link coming back.
RECONNECT = RetryPolicy(attempts=None, first_delay_s=0.5, max_delay_s=5.0, jitter=0.25)


@dataclass(frozen=True)
class Message:
    """A message received from the broker."""

    topic: str
    payload: bytes
    retain: bool = False
    #: ``time.monotonic()`` when paho handed the message over, before any queueing.
    received_at: float = 0.0
    #: Set for a message the broker kept for this session while the link was down: the
    #: longest it can have waited, in seconds (``inf`` when unknown: kept from before
    #: this process connected). None for a message delivered live.
    queued_up_to_s: float | None = None


Handler = Callable[[Message], None]


#: paho's network loop waits in ``select`` at most this share of the keepalive. Outgoing
#: messages do not wait for it (a publish from another thread wakes the loop through
#: paho's socket pair), but the keepalive is checked only when the loop wakes: a PINGREQ
#: due after ``keepalive`` leaves at the latest a quarter of it later, well before the
#: broker's limit of one and a half keepalives.
LOOP_TIMEOUT_SHARE = 0.25
#: Keepalive of a process's side connections (the instance guard, the meter claim): they
#: carry a retained claim and its will, and sit idle otherwise. A crashed process closes
#: its sockets and the broker sends the will at once; only a host or network that dies
#: without a word leaves the will waiting, 1.5 keepalives. Their network threads wake a
#: quarter keepalive apart, every 15 s instead of every 2.5 s.
SIDE_KEEPALIVE_S = 60


class _Client(mqtt.Client):
    """paho's client whose network thread waits longer than paho's one second.

    paho's ``loop_start`` runs ``loop_forever`` with its default ``select`` timeout of
    1 s: one idle wake-up a second per connection. The thread's body is paho's own
    ``_thread_main`` with the timeout passed (paho-mqtt is pinned in constraints.txt).
    """

    #: Set by ``MqttBus`` before the thread starts.
    loop_timeout_s = 1.0

    def _thread_main(self) -> None:
        try:
            self.loop_forever(timeout=self.loop_timeout_s, retry_first_connection=True)
        finally:
            self._thread = None


def tcp_no_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Switch Nagle's algorithm off on a TCP connection to the broker.

    A command's QoS 2 answer is several small packets, and each would otherwise wait for
    the broker's delayed ACK (about 40 ms).
    """
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _settled(info: mqtt.MQTTMessageInfo) -> bool:
    """True when there is nothing left to wait for: published, or not trackable.

    paho raises for a message published while disconnected (it still sends it after the
    reconnect, but its info never completes); such a message cannot be waited for.
    """
    try:
        return info.is_published()
    except (ValueError, RuntimeError):
        return True


class MqttBus:
    """Publish and subscribe on one broker, surviving connection losses.

    The module keeps a persistent session (the default); a client that only watches or
    calls for a while, such as the tools, passes ``clean_session=True`` so the broker
    keeps nothing of it after it leaves. ``will`` (topic, payload) is published by the
    broker, retained with QoS 1, when the connection ends without a clean disconnect.
    """

    def __init__(
        self,
        broker: BrokerSettings,
        client_id: str,
        *,
        keepalive_s: int = 10,
        backoff: RetryPolicy | None = None,
        clean_session: bool = False,
        will: tuple[str, bytes] | None = None,
        mqtt5: bool = False,
        report_link: bool = True,
        marker_topic: str | None = None,
    ) -> None:
        """A bus for ``client_id``; it connects only in ``connect``.

        ``report_link`` False logs losses and refusals at debug only: for a second
        connection of a process whose main connection reports them already.

        ``mqtt5`` speaks MQTT 5 (always a clean start) so that ``publish`` can give a
        message an expiry; everything else stays MQTT 3.1.1, as EVerest speaks it.

        ``marker_topic`` (a topic only this client uses) lets the bus tell the messages the
        broker kept for a persistent session apart from live ones: after a connect that
        finds the session present it publishes a marker there, and everything delivered
        before the marker comes back was kept (``Message.queued_up_to_s``).
        """
        self._broker = broker
        self._keepalive_s = keepalive_s
        self._backoff = backoff or RECONNECT
        self._mqtt5 = mqtt5
        self._report_link = report_link
        self._marker_topic = marker_topic
        #: ``time.monotonic()`` when the link was last lost; None before the first connect.
        self._lost_at: float | None = None
        #: While the kept messages come in: how long they can have waited, and until when
        #: (monotonic) at the latest the marker is awaited.
        self._backlog: tuple[float, float] | None = None
        #: Clear from a connect that found the session until the marker came back.
        self._drained = threading.Event()
        self._drained.set()
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if mqtt5 else clean_session,
            protocol=MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311,
            transport="unix" if broker.socket_path else "tcp",
        )
        if keepalive_s > 0:
            self._client.loop_timeout_s = keepalive_s * LOOP_TIMEOUT_SHARE
        self._client.enable_logger(_PAHO_LOGGER)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        if broker.username:
            self._client.username_pw_set(broker.username, broker.password)
        if broker.tls_ca_file:
            self._client.tls_set_context(
                broker_ssl_context(broker.tls_ca_file, broker.tls_cert_file, broker.tls_key_file)
            )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = tcp_no_delay
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_log = self._on_paho_log
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Handler] = {}
        self._connected_callbacks: list[Callable[[], None]] = []
        self._lost_callbacks: list[Callable[[], None]] = []
        self._inbox: queue.SimpleQueue[tuple[str, Message | None] | None] = queue.SimpleQueue()
        self._pending: deque[mqtt.MQTTMessageInfo] = deque()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._closing = threading.Event()
        #: Held by a publication and by ``close`` while it releases paho's socket pair: a
        #: publication from another thread (a heartbeat) never meets a half-closed client.
        self._publishing = threading.Lock()
        self._attempt = 0
        self._next_delay = 0.0
        #: Why the broker refused the last attempt; None after a successful connect.
        self._refusal: str | None = None
        self._refusal_logged = False
        #: Set on the first connect or refusal: what ``connect()`` waits for.
        self._answered = threading.Event()
        self._set_reconnect_delay()
        self._started = False
        self._worker: threading.Thread | None = None
        #: Number of successful connections so far (1 after the first connect).
        self.connections = 0

    # --- public API ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a broker connection is up."""
        return self._connected.is_set()

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Deliver messages on ``topic`` (a filter) to ``handler`` on the dispatch worker."""
        with self._lock:
            self._subscriptions[topic] = handler
        if self.connected:
            self._client.subscribe(topic, qos=2)

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the dispatch worker after every successful (re)connect."""
        with self._lock:
            self._connected_callbacks.append(callback)

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on paho's network thread when an established link is lost.

        It must be quick: paho reconnects only after it returns.
        """
        with self._lock:
            self._lost_callbacks.append(callback)

    def connect(self, timeout_s: float = 10.0) -> None:
        """Start the threads and wait for the first connection; raise ``BrokerUnavailable``."""
        if self._started:
            raise RuntimeError("connect() called twice")
        self._started = True
        if self._broker.socket_path:
            self._client.connect_async(self._broker.socket_path, keepalive=self._keepalive_s)
        else:
            self._client.connect_async(
                self._broker.host, self._broker.port, keepalive=self._keepalive_s
            )
        self._worker = threading.Thread(target=self._work, name="mqtt-dispatch", daemon=True)
        self._worker.start()
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        # A refusal ends the wait at once: retrying within the timeout would not change it.
        self._answered.wait(timeout_s)
        if not (
            self._connected.is_set()
            and self._subscribed.wait(max(0.0, deadline - time.monotonic()))
        ):
            self._fail_connect(timeout_s)
        # What the broker kept comes first: a call made once this returns is a live one.
        self._drained.wait(max(0.0, deadline - time.monotonic()))

    def _fail_connect(self, timeout_s: float) -> NoReturn:
        """Close and raise why the first connection did not come about."""
        self.close(timeout_s=1.0)
        if self._refusal is not None:
            raise BrokerRefused(self._refusal)
        raise BrokerUnavailable(
            f"no connection to the MQTT broker at {self._broker.describe()} within {timeout_s:g} s"
        )

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 2,
        retain: bool = False,
        drop_when_offline: bool = False,
        expiry_s: int | None = None,
    ) -> bool:
        """Publish; with ``drop_when_offline`` nothing is queued while disconnected.

        Without it a QoS > 0 message waits in paho's queue and goes out after the next
        connect. ``expiry_s`` (MQTT 5 only) makes the broker drop the message when it
        could not be delivered within that many seconds. Returns False when the message
        was dropped or refused.
        """
        if drop_when_offline and not self.connected:
            _LOGGER.debug("not connected to the broker; dropped a message for %s", topic)
            return False
        properties: Properties | None = None
        if expiry_s is not None:
            if not self._mqtt5:
                raise ValueError("a message expiry needs an MQTT 5 connection")
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry_s
        with self._publishing:
            if self._closing.is_set():
                _LOGGER.debug("bus closed; dropped a message for %s", topic)
                return False
            info = self._client.publish(
                topic, payload, qos=qos, retain=retain, properties=properties
            )
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            _LOGGER.warning("publishing to %s failed: %s", topic, mqtt.error_string(info.rc))
            return False
        if qos > 0:
            with self._lock:
                while self._pending and _settled(self._pending[0]):
                    self._pending.popleft()
                self._pending.append(info)
        return True

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` until every QoS > 0 publication so far is complete."""
        self._await_pending(time.monotonic() + timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Let queued publications go out (up to ``timeout_s``), disconnect, stop threads."""
        deadline = time.monotonic() + timeout_s
        if self.connected:
            self._await_pending(deadline)
        self._closing.set()
        # paho's network thread may still run one loop on the socket disconnect() closed
        # and logs that as an error; nothing paho says from here on is news.
        self._client.disable_logger()
        self._client.disconnect()
        self._client.loop_stop()
        # Releases paho's internal wake-up socket pair, which nothing else closes.
        with self._publishing:
            self._client.reinitialise()
        self._inbox.put(None)
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(max(0.1, deadline - time.monotonic()))

    # --- internals -----------------------------------------------------------------

    def _await_pending(self, deadline: float) -> None:
        with self._lock:
            pending = list(self._pending)
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                info.wait_for_publish(remaining)
            except (ValueError, RuntimeError):
                continue

    def _set_reconnect_delay(self) -> None:
        delay = self._backoff.delay(self._attempt)
        self._attempt += 1
        # paho waits the minimum delay first and doubles from there; setting both
        # bounds to our own jittered value makes its next wait exactly that value.
        # paho computes with floats although its annotation says int.
        self._client.reconnect_delay_set(cast(int, delay), cast(int, delay))
        self._next_delay = delay

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        if reason_code.is_failure:
            self._set_reconnect_delay()
            self._note_refusal(
                f"the MQTT broker at {self._broker.describe()} refused "
                f"{self._broker.describe_user()}: {reason_code}"
            )
            return
        self._attempt = 0
        self._refusal, self._refusal_logged = None, False
        # Connected, paho's log has nothing more to tell the bus; without a callback paho
        # no longer formats a line for every packet (five per publication of a var).
        client.on_log = None
        self._set_reconnect_delay()
        self.connections += 1
        # Set first: a subscribe() racing with this callback then subscribes itself.
        self._connected.set()
        self._answered.set()
        with self._lock:
            topics = list(self._subscriptions)
        if self._marker_topic is not None:
            topics.append(self._marker_topic)
        if topics:
            _, self._subscribe_mid = client.subscribe([(topic, 2) for topic in topics])
        else:
            self._subscribed.set()
        if self._marker_topic is not None and flags.session_present:
            self._await_backlog(client, self._marker_topic)
        _LOGGER.info(
            "connected to the MQTT broker at %s (session present: %s)",
            self._broker.describe(),
            flags.session_present,
        )
        self._inbox.put(("connected", None))

    def _await_backlog(self, client: mqtt.Client, marker_topic: str) -> None:
        """Mark what the broker kept for the session, up to the marker published now."""
        now = time.monotonic()
        waited = math.inf if self._lost_at is None else now - self._lost_at
        self._backlog = (waited, now + BACKLOG_MARKER_WAIT_S)
        self._drained.clear()
        # The broker delivers one session's messages in order: all that it kept came in
        # before this marker, whose echo ends the backlog.
        client.publish(marker_topic, b"", qos=2)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        was_connected = self._connected.is_set()
        if was_connected:
            self._lost_at = time.monotonic()
        self._connected.clear()
        client.on_log = self._on_paho_log
        self._subscribed.clear()
        # A refused CONNACK ends in a disconnect too; the refusal has been reported.
        if was_connected and not self._closing.is_set():
            with self._lock:
                lost_callbacks = list(self._lost_callbacks)
            for callback in lost_callbacks:
                callback()
            (_LOGGER.warning if self._report_link else _LOGGER.debug)(
                "disconnected from the MQTT broker (%s); reconnecting in %.1f s",
                reason_code,
                self._next_delay,
            )

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._set_reconnect_delay()
        # paho calls this from its ``except OSError`` block: the exception is the current one.
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError):
            self._note_refusal(self._tls_failure(error))
            return
        # Loud for the first attempts only: the broker may stay away for a long time.
        log = _LOGGER.warning if self._attempt <= 2 and self._report_link else _LOGGER.debug
        log(
            "cannot reach the MQTT broker at %s; retrying in %.1f s",
            self._broker.describe(),
            self._next_delay,
        )

    def _tls_failure(self, error: ssl.SSLError | str) -> str:
        where = f"the MQTT broker at {self._broker.describe()}"
        if isinstance(error, ssl.SSLCertVerificationError):
            return (
                f"{where} presented a certificate refused against the CA file "
                f"{self._broker.tls_ca_file}: {error.verify_message}"
            )
        return f"TLS with {where} failed: {error}"

    def _on_paho_log(self, client: mqtt.Client, userdata: object, level: int, text: str) -> None:
        # With TLS 1.3 a broker refuses a client certificate (or its absence) after the
        # handshake: paho only sees the broker's alert on its first read. Set only while
        # not connected (``_on_connect`` removes it, ``_on_disconnect`` sets it again).
        if text.startswith(_TLS_RECEIVE_FAILED) and not self.connected:
            self._note_refusal(self._tls_failure(text.partition(": ")[2]))

    def _note_refusal(self, reason: str) -> None:
        """Remember why; log it once per outage while running (``connect()`` raises it first)."""
        self._refusal = reason
        self._answered.set()
        loud = self.connections > 0 and not self._refusal_logged and self._report_link
        self._refusal_logged = self._refusal_logged or loud
        (_LOGGER.error if loud else _LOGGER.debug)(
            "%s; retrying in %.1f s", reason, self._next_delay
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: object,
    ) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            _LOGGER.error("the broker refused a subscription: %s", refused)
        if mid == self._subscribe_mid:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if message.topic == self._marker_topic:
            self._backlog = None
            self._drained.set()
            return
        queued: float | None = None
        if self._backlog is not None:
            queued, until = self._backlog
            if now > until:
                # The marker never came back (a broker ACL?): count nothing as kept.
                _LOGGER.warning("the session marker on %s never came back", self._marker_topic)
                self._backlog, queued = None, None
                self._drained.set()
        received = Message(message.topic, bytes(message.payload), message.retain, now, queued)
        self._inbox.put(("message", received))

    def _work(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            kind, message = item
            try:
                if message is None:
                    self._run_connected_callbacks()
                else:
                    self._dispatch(message)
            except Exception:
                # A faulty handler must not take the bus down with it.
                _LOGGER.exception("handling %s failed", kind)

    def _run_connected_callbacks(self) -> None:
        with self._lock:
            callbacks = list(self._connected_callbacks)
        for callback in callbacks:
            callback()

    def _dispatch(self, message: Message) -> None:
        with self._lock:
            handlers = [
                handler
                for topic, handler in self._subscriptions.items()
                if mqtt.topic_matches_sub(topic, message.topic)
            ]
        for handler in handlers:
            handler(message)
