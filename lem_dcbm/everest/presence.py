"""One driver per meter: a retained presence per module id, checked before the module connects.

Two processes with the same module id share one MQTT client id: the broker lets one
connect at a time and each reconnect throws the other out, for ever, while both drive the
same meter (two transactions, two bills). So before the module connects, an
``InstanceGuard`` on a connection of its own (its own client id, clean session):

1. subscribes to ``{prefix}lem_dcbm/{module_id}/presence`` (retained) and ``.../ask``;
2. publishes an ask naming itself; when its own ask comes back, the retained presence
   (if any) came before it, since one connection delivers in order;
3. when that presence names another instance that can be running (see
   ``Instance.implausible``), waits up to ``answer_wait_s`` for an answer to the ask: an
   answer refuses the start (``DuplicateInstance``). No answer means the instance died
   before the broker noticed, and the start goes on;
4. publishes its own presence, online and retained, with a will that marks it offline,
   and waits for it to come back: another instance's presence that comes back first was
   published first (two started in the same instant), and when that one answers an ask
   too, this start is refused. The broker's order decides, not the claimed start times.

Anyone on the broker can publish on these topics, so what a presence says is only a
claim. A running module never stops for one: a claimant that answers an ask and can be
running is reported (one error line naming both instances, and ``on_conflict``, which
raises an EVerest error), anything else is ignored and this instance's presence put back.
A payload that is not exactly a presence (any other JSON, a number that is no time or
pid, too big, too deep) is ignored.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from lem_dcbm.bounded_json import loads_bounded
from lem_dcbm.clock import rfc3339
from lem_dcbm.config import BrokerSettings, normalize_prefix
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest import envelope
from lem_dcbm.everest.bus import SIDE_KEEPALIVE_S, BrokerUnavailable, Message, MqttBus

_LOGGER = logging.getLogger(__name__)

#: How long a newcomer waits for the instance a retained presence names to answer.
ANSWER_WAIT_S = 3.0
#: A presence is a few short fields; anything bigger is not one.
MAX_PRESENCE_BYTES = 1024
#: Presence payloads are flat objects: nothing nested is one.
MAX_PRESENCE_DEPTH = 1
MAX_TOKEN_CHARS = 64
#: Host names are at most 255 characters (RFC 1035).
MAX_HOST_CHARS = 255
#: Larger than any pid a kernel hands out (Linux: at most 2**22), and what ``kill`` takes.
MAX_PID = 2**31 - 1
#: 2000-01-01T00:00:00Z: no instance started before (unless this host's clock says so too).
EARLIEST_START = 946684800.0
#: How far another host's clock may run ahead of this one's before its start time is
#: called "in the future".
CLOCK_SKEW_S = 300.0


class DuplicateInstance(LemDcbmError):
    """Another instance with the same module id runs already; the message names it."""


def _text(value: object, limit: int) -> str | None:
    """``value`` when it is a short, printable, non-empty string."""
    if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable():
        return value
    return None


@dataclass(frozen=True, slots=True)
class Instance:
    """One running process of a module id, as its presence message describes it."""

    token: str
    pid: int
    host: str
    #: Wall-clock seconds when it claimed the module id.
    started: float
    online: bool = True

    def describe(self) -> str:
        """``pid 123 on host, running since <time> (instance <token>)``."""
        try:
            since = rfc3339(datetime.fromtimestamp(self.started, timezone.utc))
        except (ValueError, OverflowError, OSError):
            since = f"{self.started!r} (no time)"
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
        return envelope.dumps(fields)

    @classmethod
    def parse(cls, payload: bytes) -> Instance | None:
        """The instance a presence or ask message names; None for anything else.

        Strict: a flat object whose members have exactly the types and ranges a presence
        has; nothing in it can make a later step (a time, a ``kill``) fail.
        """
        if len(payload) > MAX_PRESENCE_BYTES:
            return None
        try:
            fields: Any = loads_bounded(payload.decode("utf-8"), MAX_PRESENCE_DEPTH)
        except ValueError:  # UnicodeDecodeError and too deep are ValueErrors too
            return None
        if not isinstance(fields, dict):
            return None
        token = _text(fields.get("instance"), MAX_TOKEN_CHARS)
        host = _text(fields.get("host"), MAX_HOST_CHARS)
        pid, started, state = fields.get("pid"), fields.get("started"), fields.get("state")
        if token is None or host is None or state not in ("online", "offline"):
            return None
        if type(pid) is not int or not 0 < pid <= MAX_PID:
            return None
        if isinstance(started, bool) or not isinstance(started, (int, float)):
            return None
        try:
            seconds = float(started)
        except OverflowError:  # an integer beyond any float
            return None
        if not math.isfinite(seconds):
            return None
        return cls(token, pid, host, seconds, online=state == "online")

    def implausible(self, now: float) -> str | None:
        """Why this cannot be a running instance (seen at ``now``, epoch seconds), or None."""
        if self.started > now + CLOCK_SKEW_S:
            return "its start time is in the future"
        if self.started < EARLIEST_START <= now:
            return "its start time is before 2000"
        if self.known_dead():
            return "its process is gone"
        return None

    def known_dead(self) -> bool:
        """True when this instance ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except (OSError, OverflowError):
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


def conflict_message(module_id: str, me: Instance, other: Instance) -> str:
    """The one error line for another instance that answers while this one runs."""
    return (
        f"module id {module_id} runs twice: another instance ({other.describe()}) answers "
        f"on the broker beside this one ({me.describe()}); both may drive the same meter: "
        "stop one of them (this one keeps serving)"
    )


#: Kinds of message the guard reads before its claim is complete.
_PRESENCE, _ASK = "presence", "ask"


class InstanceGuard:
    """Claims a module id on the broker, refuses a second claim, and watches for one.

    ``on_conflict`` is called with the error line when another instance that answers an
    ask shows up while this one runs, ``on_resolved`` when the last such one went offline.
    """

    def __init__(
        self,
        broker: BrokerSettings,
        module_id: str,
        *,
        answer_wait_s: float = ANSWER_WAIT_S,
        on_conflict: Callable[[str], None] | None = None,
        on_resolved: Callable[[], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        base = f"{normalize_prefix(broker.prefix)}lem_dcbm/{module_id}"
        self.module_id = module_id
        self.presence_topic = f"{base}/presence"
        self.ask_topic = f"{base}/ask"
        self._wall_clock = wall_clock
        self.me = Instance(
            token=uuid.uuid4().hex[:12],
            pid=os.getpid(),
            host=socket.gethostname(),
            started=wall_clock(),
        )
        self._answer_wait_s = answer_wait_s
        self._on_conflict = on_conflict
        self._on_resolved = on_resolved
        self._lock = threading.Lock()
        #: Set once this instance published its presence: from then on it answers asks.
        self._claimed = False
        #: Set once the claim is complete: from then on presences are judged as they come.
        self._running = False
        self._refused = False
        #: Another process asked while the claim was under way: answered once it is complete.
        self._asked = False
        #: Messages seen before the claim was complete: (kind, instance, live).
        self._early: queue.SimpleQueue[tuple[str, Instance, bool]] = queue.SimpleQueue()
        #: While running: claimants asked to answer (token -> answered), and those that did.
        self._pending: dict[str, bool] = {}
        self._confirmed: set[str] = set()
        self._timers: list[threading.Timer] = []
        #: Kinds of ignored message already logged at warning level.
        self._told: set[str] = set()
        offline = replace(self.me, online=False).payload()
        self._bus = MqttBus(
            broker,
            f"lemdcbm-p-{self.me.token}",
            clean_session=True,
            will=(self.presence_topic, offline),
            keepalive_s=SIDE_KEEPALIVE_S,
            report_link=False,  # the module's own connection reports the broker's state
        )
        self._bus.subscribe(self.presence_topic, self._on_presence)
        self._bus.subscribe(self.ask_topic, self._on_ask)
        self._bus.on_connected(self._announce)

    def claim(self, timeout_s: float = 3.0) -> None:
        """Take the module id; raise ``DuplicateInstance`` or ``BrokerUnavailable``."""
        self._bus.connect(timeout_s)
        try:
            self._claim(timeout_s)
        except LemDcbmError:
            with self._lock:
                self._refused = True  # its presence must not be marked offline for it
            self._bus.close(timeout_s=1.0)
            raise
        with self._lock:
            self._running = True
        # Whatever came after its own presence came back is judged as if it came now, and
        # an ask that came during the claim is answered now: only a complete claim answers,
        # so a start that is refused never looks like a running instance.
        while not self._early.empty():
            kind, instance, _ = self._early.get_nowait()
            if kind == _PRESENCE and instance.token != self.me.token:
                self._judge(instance)
        if self._asked:
            self._announce()

    @property
    def connected(self) -> bool:
        """True while the presence connection is up."""
        return self._bus.connected

    def close(self) -> None:
        """Mark this instance offline (unless its start was refused) and disconnect."""
        with self._lock:
            offline = self._claimed and not self._refused
            self._claimed = self._running = False
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        if offline:
            self._bus.publish(
                self.presence_topic,
                replace(self.me, online=False).payload(),
                retain=True,
                drop_when_offline=True,
            )
        self._bus.close(timeout_s=2.0)

    # --- the claim ---------------------------------------------------------------------

    def _claim(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self._bus.publish(self.ask_topic, self.me.payload())
        owner = self._credible(self._retained_owner(deadline))
        if owner is not None:
            answered = self._answerer(owner)
            if answered is not None:
                raise DuplicateInstance(duplicate_message(self.module_id, answered))
            _LOGGER.warning(
                "module id %s: the instance the broker still lists (%s) did not answer: "
                "it is gone; starting",
                self.module_id,
                owner.describe(),
            )
        with self._lock:
            self._claimed = True
        self._announce()
        # Presences that come back before this one's own were published before it.
        for first in self._until_own_presence(time.monotonic() + timeout_s):
            self._bus.publish(self.ask_topic, self.me.payload())
            answered = self._answerer(first)
            if answered is not None:
                raise DuplicateInstance(duplicate_message(self.module_id, answered))

    def _retained_owner(self, deadline: float) -> Instance | None:
        """The other instance the retained presence names as online, once our ask echoes."""
        owner: Instance | None = None
        while True:
            kind, instance, _ = self._next_early(deadline, "the echo of its own ask")
            if kind == _ASK and instance.token == self.me.token:
                return owner
            if kind == _PRESENCE and instance.token != self.me.token:
                owner = instance if instance.online else None

    def _until_own_presence(self, deadline: float) -> list[Instance]:
        """Other online instances whose presence comes back before this one's, credible ones."""
        first: list[Instance] = []
        while True:
            kind, instance, _ = self._next_early(deadline, "its own presence back")
            if kind != _PRESENCE or not instance.online:
                continue
            if instance.token == self.me.token:
                return first
            credible = self._credible(instance)
            if credible is not None:
                first.append(credible)

    def _credible(self, other: Instance | None) -> Instance | None:
        """``other`` unless it cannot be a running instance (which is then logged)."""
        if other is None:
            return None
        why = other.implausible(self._wall_clock())
        if why is None:
            return other
        self._tell(
            why, f"ignored a presence for module id {self.module_id} ({other.describe()}): {why}"
        )
        return None

    def _answerer(self, other: Instance) -> Instance | None:
        """Who answers our ask within the wait: ``other``, or any instance that can be running.

        Any one will do: the retained presence may name an instance that is gone while
        another one runs (and answers).
        """
        deadline = time.monotonic() + self._answer_wait_s
        while True:
            try:
                kind, instance, live = self._next_early(deadline, "")
            except BrokerUnavailable:
                return None
            if kind != _PRESENCE or not (live and instance.online):
                continue
            if instance.token == other.token or (
                instance.token != self.me.token and self._credible(instance) is not None
            ):
                return instance

    def _next_early(self, deadline: float, what: str) -> tuple[str, Instance, bool]:
        try:
            return self._early.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BrokerUnavailable(
                f"the MQTT broker did not deliver {what or 'an answer'} in time"
            ) from None

    # --- while running -----------------------------------------------------------------

    def _announce(self) -> None:
        """Publish this instance as online (retained), once claimed."""
        with self._lock:
            if not self._claimed or self._refused:
                return
        self._bus.publish(self.presence_topic, self.me.payload(), retain=True)

    def _on_presence(self, message: Message) -> None:
        instance = Instance.parse(message.payload)
        if instance is None:
            self._tell(
                "unreadable", f"ignored a message on {self.presence_topic} that is no presence"
            )
            self._announce()
            return
        with self._lock:
            if not self._running:
                self._early.put((_PRESENCE, instance, not message.retain))
                return
        if instance.token != self.me.token:
            self._judge(instance)

    def _judge(self, other: Instance) -> None:
        """Another instance's presence while this one runs: never a reason to stop."""
        if not other.online:
            self._went_offline(other)
            self._announce()  # its presence (or its will) replaced ours: put ours back
            return
        if self._credible(other) is None:
            self._announce()
            return
        with self._lock:
            if other.token in self._confirmed:
                return
            if other.token in self._pending:
                self._pending[other.token] = True  # it speaks again: it is there
                return
            self._pending[other.token] = False
            timer = threading.Timer(self._answer_wait_s, self._settle, args=(other,))
            timer.daemon = True
            self._timers.append(timer)
        self._bus.publish(self.ask_topic, self.me.payload())
        timer.start()

    def _settle(self, other: Instance) -> None:
        """The wait for ``other``'s answer is over: report it, or put our presence back."""
        with self._lock:
            answered = self._pending.pop(other.token, False)
            if not self._running:
                return
            if answered:
                self._confirmed.add(other.token)
        if not answered:
            self._tell(
                "silent",
                f"module id {self.module_id}: ignored a presence naming {other.describe()}: "
                "it did not answer an ask",
            )
            self._announce()
            return
        message = conflict_message(self.module_id, self.me, other)
        _LOGGER.error("%s", message)
        if self._on_conflict is not None:
            self._on_conflict(message)

    def _went_offline(self, other: Instance) -> None:
        with self._lock:
            if other.token not in self._confirmed:
                return
            self._confirmed.discard(other.token)
            resolved = not self._confirmed
        _LOGGER.info(
            "module id %s: the other instance (%s) went offline", self.module_id, other.describe()
        )
        if resolved and self._on_resolved is not None:
            self._on_resolved()

    def _on_ask(self, message: Message) -> None:
        asker = Instance.parse(message.payload)
        if asker is None:
            self._tell("unreadable ask", f"ignored a message on {self.ask_topic} that is no ask")
            return
        with self._lock:
            if not self._running:
                self._early.put((_ASK, asker, True))
                self._asked = self._asked or asker.token != self.me.token
                return
        if asker.token == self.me.token:
            return
        self._tell(
            f"ask {asker.token}",
            f"module id {self.module_id}: another process tried to start with this module id "
            f"({asker.describe()}); it is told that this instance runs",
        )
        self._announce()

    def _tell(self, kind: str, text: str) -> None:
        """Warn the first time per kind; later ones at debug level (a flood must not fill logs)."""
        with self._lock:
            first = kind not in self._told and len(self._told) < 1000
            self._told.add(kind)
        (_LOGGER.warning if first else _LOGGER.debug)("%s", text)
