"""One driver per meter: a retained presence per module id, checked before the module connects.

Two processes with the same module id share one MQTT client id: the broker lets one
connect at a time and each reconnect throws the other out, for ever, while both drive the
same meter (two transactions, two bills). So before the module connects, an
``InstanceGuard`` on a connection of its own (its own client id, clean session):

1. subscribes to ``{prefix}lem_dcbm/{module_id}/presence`` (retained) and ``.../ask``;
2. publishes an ask naming itself; when its own ask comes back, the retained presence
   (if any) came before it, since one connection delivers in order;
3. when that presence says another instance is online, waits up to ``answer_wait_s``
   for its answer to the ask: an answer refuses the start (``DuplicateInstance``). No
   answer means the instance died before the broker noticed, and the start goes on (an
   instance on this host whose process is gone is known dead without waiting);
4. publishes its own presence, online and retained, with a will that marks it offline.

While running it answers every ask (and logs who asked). When another instance's online
presence appears anyway (two started in the same instant), the younger one stops: the
instance that ran first keeps the meter, since it may be in the middle of a transaction.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from lem_dcbm.clock import rfc3339
from lem_dcbm.config import BrokerSettings, normalize_prefix
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest.bus import BrokerUnavailable, Message, MqttBus

_LOGGER = logging.getLogger(__name__)

#: How long a newcomer waits for the instance a retained presence names to answer.
ANSWER_WAIT_S = 3.0


class DuplicateInstance(LemDcbmError):
    """Another instance with the same module id runs already; the message names it."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One running process of a module id, as its presence message describes it."""

    token: str
    pid: int
    host: str
    #: Wall-clock seconds when it claimed the module id (the older instance wins).
    started: float
    online: bool = True

    def describe(self) -> str:
        """``pid 123 on host, running since <time> (instance <token>)``."""
        since = rfc3339(datetime.fromtimestamp(self.started, timezone.utc))
        return f"pid {self.pid} on {self.host}, running since {since} (instance {self.token})"

    def payload(self) -> bytes:
        """The presence message."""
        fields = {
            "instance": self.token,
            "pid": self.pid,
            "host": self.host,
            "started": self.started,
            "state": "online" if self.online else "offline",
        }
        return json.dumps(fields).encode()

    @classmethod
    def parse(cls, payload: bytes) -> Instance | None:
        """The instance a presence or ask message names; None for anything unreadable."""
        try:
            fields = json.loads(payload)
            return cls(
                token=str(fields["instance"]),
                pid=int(fields["pid"]),
                host=str(fields["host"]),
                started=float(fields["started"]),
                online=fields["state"] == "online",
            )
        except (ValueError, TypeError, KeyError):
            return None

    def older_than(self, other: Instance) -> bool:
        """True when this instance claimed the module id first (ties broken by token)."""
        return (self.started, self.token) < (other.started, other.token)

    def known_dead(self) -> bool:
        """True when this instance ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # alive, owned by another user
        return False


def duplicate_message(module_id: str, other: Instance) -> str:
    """The one line a refused start prints."""
    return (
        f"module id {module_id} is already running: {other.describe()}; refusing to start "
        "a second driver for the same meter (stop that one, or give this one another id)"
    )


#: Losses of the module's link within this many seconds, while the presence link stayed
#: up, that point at another client with the module's MQTT client id.
TAKEOVER_WINDOW_S = 60.0
TAKEOVER_LOSSES = 3


class TakeoverWatch:
    """Recognises a fight over one MQTT client id: repeated losses while the broker is fine.

    A client that does not announce itself (an older lem-dcbm, another program) with the
    module's client id makes the broker close the module's link at each of its connects;
    the presence connection, with a client id of its own, stays up meanwhile.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._losses: list[float] = []
        self._told = False

    def lost(self, other_link_up: bool) -> bool:
        """Note a loss of the module's link; True once, when it looks like a takeover fight."""
        now = self._monotonic()
        if not other_link_up:
            self._losses.clear()  # the broker itself went away: no fight
            return False
        self._losses = [t for t in self._losses if now - t <= TAKEOVER_WINDOW_S] + [now]
        if len(self._losses) < TAKEOVER_LOSSES or self._told:
            return False
        self._told = True
        return True


def takeover_message(module_id: str, client_id: str, losses: int = TAKEOVER_LOSSES) -> str:
    """The error line for a fight over the module's MQTT client id."""
    return (
        f"module id {module_id}: the broker closed this module's connection {losses} times "
        f"within {TAKEOVER_WINDOW_S:g} s while its other connection stayed up: another client "
        f"uses the same MQTT client id {client_id} (a second process with module id "
        f"{module_id} that does not announce itself, such as an older lem-dcbm); stop it"
    )


class InstanceGuard:
    """Claims a module id on the broker, refuses a second claim, and watches for one."""

    def __init__(
        self,
        broker: BrokerSettings,
        module_id: str,
        *,
        answer_wait_s: float = ANSWER_WAIT_S,
        on_conflict: Callable[[str], None] | None = None,
    ) -> None:
        base = f"{normalize_prefix(broker.prefix)}lem_dcbm/{module_id}"
        self.module_id = module_id
        self.presence_topic = f"{base}/presence"
        self.ask_topic = f"{base}/ask"
        self.me = Instance(
            token=uuid.uuid4().hex[:12],
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.time(),
        )
        self._answer_wait_s = answer_wait_s
        self._on_conflict = on_conflict
        self._lock = threading.Lock()
        self._claimed = False
        self._lost = False
        #: Messages seen before the claim: (kind, instance, live) for ``claim`` to judge.
        self._early: queue.SimpleQueue[tuple[str, Instance, bool]] = queue.SimpleQueue()
        offline = replace(self.me, online=False).payload()
        self._bus = MqttBus(
            broker,
            f"lemdcbm-p-{self.me.token}",
            clean_session=True,
            will=(self.presence_topic, offline),
            report_link=False,  # the module's own connection reports the broker's state
        )
        self._bus.subscribe(self.presence_topic, self._on_presence)
        self._bus.subscribe(self.ask_topic, self._on_ask)
        self._bus.on_connected(self._announce)

    def claim(self, timeout_s: float = 3.0) -> None:
        """Take the module id; raise ``DuplicateInstance`` or ``BrokerUnavailable``."""
        self._bus.connect(timeout_s)
        try:
            other = self._retained_owner(time.monotonic() + timeout_s)
            if other is not None and self._answers(other):
                raise DuplicateInstance(duplicate_message(self.module_id, other))
        except LemDcbmError:
            self._bus.close(timeout_s=1.0)
            raise
        if other is not None:
            _LOGGER.warning(
                "module id %s: the instance the broker still lists (%s) is gone; starting",
                self.module_id,
                other.describe(),
            )
        with self._lock:
            self._claimed = True
        self._announce()
        # Whatever came between the ask's echo and the claim is judged as if it came now.
        while not self._early.empty():
            kind, instance, _ = self._early.get_nowait()
            if kind == "presence":
                self._judge(instance)

    @property
    def connected(self) -> bool:
        """True while the presence connection is up."""
        return self._bus.connected

    def close(self) -> None:
        """Mark this instance offline (unless it lost the module id) and disconnect."""
        with self._lock:
            offline = self._claimed and not self._lost
            self._claimed = False
        if offline:
            self._bus.publish(
                self.presence_topic,
                replace(self.me, online=False).payload(),
                retain=True,
                drop_when_offline=True,
            )
        self._bus.close(timeout_s=2.0)

    # --- internals -------------------------------------------------------------------

    def _retained_owner(self, deadline: float) -> Instance | None:
        """The other instance the retained presence names as online, once our ask echoes."""
        self._bus.publish(self.ask_topic, self.me.payload())
        owner: Instance | None = None
        while True:
            kind, instance, _ = self._next_early(deadline, "the echo of its own ask")
            if kind == "ask" and instance.token == self.me.token:
                break
            if kind == "presence" and instance.token != self.me.token:
                owner = instance if instance.online else None
        if owner is not None and owner.known_dead():
            _LOGGER.info("module id %s: %s is no longer running", self.module_id, owner.describe())
            return None
        return owner

    def _answers(self, other: Instance) -> bool:
        """True when ``other`` answers our ask within the wait."""
        deadline = time.monotonic() + self._answer_wait_s
        while True:
            try:
                kind, instance, live = self._next_early(deadline, "")
            except BrokerUnavailable:
                return False
            if kind == "presence" and live and instance.token == other.token and instance.online:
                return True

    def _next_early(self, deadline: float, what: str) -> tuple[str, Instance, bool]:
        try:
            return self._early.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BrokerUnavailable(
                f"the MQTT broker did not deliver {what or 'an answer'} in time"
            ) from None

    def _announce(self) -> None:
        """Publish this instance as online (retained), once claimed and not lost."""
        with self._lock:
            if not self._claimed or self._lost:
                return
        self._bus.publish(self.presence_topic, self.me.payload(), retain=True)

    def _on_presence(self, message: Message) -> None:
        instance = Instance.parse(message.payload)
        if instance is None or instance.token == self.me.token:
            return
        with self._lock:
            if not self._claimed:
                self._early.put(("presence", instance, not message.retain))
                return
        self._judge(instance)

    def _judge(self, other: Instance) -> None:
        """Another instance's presence while we run: the older one keeps the module id."""
        if other.online and not self.me.older_than(other):
            message = (
                f"module id {self.module_id} runs twice: the other instance ({other.describe()}) "
                "started first and keeps the meter; this one stops"
            )
            with self._lock:
                self._lost = True
            _LOGGER.error("%s", message)
            if self._on_conflict is not None:
                self._on_conflict(message)
            return
        if other.online:
            _LOGGER.error(
                "module id %s: a second instance started (%s); this instance (%s) keeps the "
                "meter and the other stops",
                self.module_id,
                other.describe(),
                self.me.describe(),
            )
        # Its presence (or its will) replaced ours as the retained one: put ours back.
        self._announce()

    def _on_ask(self, message: Message) -> None:
        asker = Instance.parse(message.payload)
        if asker is None:
            return
        with self._lock:
            if not self._claimed:
                self._early.put(("ask", asker, True))
                return
        if asker.token == self.me.token:
            return
        _LOGGER.warning(
            "module id %s: another process tried to start with this module id (%s); "
            "it is told that this instance runs, and refuses to start",
            self.module_id,
            asker.describe(),
        )
        self._announce()
