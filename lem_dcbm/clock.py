"""Time as a dependency: logic asks a ``Clock`` so that tests can drive time."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for scheduling, UTC wall time for timestamps, and waiting."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences mean anything."""
        ...

    def utc_now(self) -> datetime:
        """The current wall time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait for ``seconds``."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``event``; True when it was set."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def utc_now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` (nothing for a negative value)."""
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait on ``event`` for at most ``seconds``."""
        return event.wait(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to; ``sleep`` and ``wait`` advance it at once."""

    def __init__(
        self,
        start: datetime | None = None,
        monotonic_start: float = 1000.0,
    ) -> None:
        self._wall = start or datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
        self._mono = monotonic_start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """Return the current manual monotonic time."""
        with self._lock:
            return self._mono

    def utc_now(self) -> datetime:
        """Return the current manual wall time."""
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        from datetime import timedelta

        with self._lock:
            self._mono += seconds
            self._wall += timedelta(seconds=seconds)

    def set_wall(self, wall: datetime) -> None:
        """Jump the wall clock (the monotonic clock stays)."""
        with self._lock:
            self._wall = wall

    def sleep(self, seconds: float) -> None:
        """Advance the clock instead of sleeping."""
        if seconds > 0:
            self.advance(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Return at once: True if ``event`` is set, else advance by ``seconds``."""
        if event.is_set():
            return True
        self.sleep(seconds)
        return event.is_set()


def rfc3339(moment: datetime) -> str:
    """Format a datetime as RFC 3339 UTC with milliseconds and a ``Z`` suffix."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
