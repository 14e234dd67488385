"""EVerest's heartbeat on ``e2m/heartbeat``: its absence logged once, its return once.

The bridge sends an increasing id every ``cfg_heartbeat_interval_ms`` (1 s by default,
none when it is 0). The watch learns the interval from the beats themselves and calls
the heartbeat missing after three intervals (at least ``MIN_TIMEOUT_S``; the bridge's
default of 1 s until two beats were seen) without one, so it needs no configuration of
its own. A heartbeat that comes back, or ids that start again from a lower value
(EVerest restarted), mean a new bridge that may not know the public key yet:
``on_resumed`` runs then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lem_dcbm.bounded_json import loads_bounded
from lem_dcbm.clock import Clock

_LOGGER = logging.getLogger(__name__)

#: Never call the heartbeat missing sooner than this after the last one.
MIN_TIMEOUT_S = 1.5
#: The interval assumed until two beats have been seen: the bridge's default
#: ``cfg_heartbeat_interval_ms``.
DEFAULT_INTERVAL_S = 1.0
#: Missing after this many observed intervals without a beat.
MISSED_INTERVALS = 3

OK = "ok"
MISSING = "missing"
UNKNOWN = "unknown"


class HeartbeatWatch:
    """Observes the heartbeat; ``check()`` runs on the module's pulse thread."""

    def __init__(
        self,
        module_id: str,
        topic: str,
        clock: Clock,
        *,
        on_change: Callable[[str], None],
        on_resumed: Callable[[], None],
    ) -> None:
        self._module_id = module_id
        self._topic = topic
        self._clock = clock
        self._on_change = on_change
        self._on_resumed = on_resumed
        self._lock = threading.Lock()
        self._last_at = clock.monotonic()
        self._last_id: int | None = None
        self._interval_s: float | None = None
        self.state = UNKNOWN
        self._odd_payload_logged = False

    @property
    def timeout_s(self) -> float:
        """How long without a beat counts as missing."""
        interval = self._interval_s or DEFAULT_INTERVAL_S
        return max(MIN_TIMEOUT_S, MISSED_INTERVALS * interval)

    def beat(self, payload: bytes) -> None:
        """Note one heartbeat message (any payload is a sign of life)."""
        beat_id = _beat_id(payload)
        if beat_id is None and not self._odd_payload_logged:
            self._odd_payload_logged = True
            _LOGGER.warning(
                "module %s: a heartbeat on %s is not an integer id: %r",
                self._module_id,
                self._topic,
                payload[:60],
            )
        now = self._clock.monotonic()
        with self._lock:
            before = self.state
            if before == OK:
                self._interval_s = now - self._last_at
            self._last_at = now
            restarted = (
                beat_id is not None and self._last_id is not None and beat_id < self._last_id
            )
            if beat_id is not None:
                self._last_id = beat_id
            self.state = OK
        if before == MISSING:
            _LOGGER.info("module %s: EVerest's heartbeat is back", self._module_id)
        elif before == UNKNOWN:
            _LOGGER.info("module %s: EVerest's heartbeat seen on %s", self._module_id, self._topic)
        elif restarted:
            _LOGGER.info(
                "module %s: EVerest's heartbeat ids started again at %s (EVerest restarted)",
                self._module_id,
                beat_id,
            )
        if before != OK:
            self._on_change(OK)
        if before == MISSING or restarted:
            self._on_resumed()

    def check(self) -> None:
        """Log once, and report, when no beat came within the timeout."""
        with self._lock:
            silent_s = self._clock.monotonic() - self._last_at
            if self.state == MISSING or silent_s < self.timeout_s:
                return
            before, self.state = self.state, MISSING
        if before == UNKNOWN:
            _LOGGER.warning(
                "module %s: no heartbeat from EVerest on %s within %.0f s; is the "
                "powermeter_API module running, with cfg_heartbeat_interval_ms above 0?",
                self._module_id,
                self._topic,
                silent_s,
            )
        else:
            _LOGGER.warning(
                "module %s: EVerest's heartbeat stopped (none for %.1f s)",
                self._module_id,
                silent_s,
            )
        self._on_change(MISSING)


def _beat_id(payload: bytes) -> int | None:
    try:
        value = loads_bounded(payload.decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON, or too deep
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
