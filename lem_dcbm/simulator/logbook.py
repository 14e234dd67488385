"""The meter's logbook: about 40 000 events, then ``logbookIsFull`` for good.

The LEM manual says the logbook holds about 40 000 events; once full, the error bit
``logbookIsFull`` stays set and the meter refuses transactions. Nothing empties it. Only
the latest entries are kept in memory (``GET /v1/logbook`` shows the last 100); the count
is what matters. A meter can start with ``prefilled`` events already logged.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from lem_dcbm.json_types import JsonObject

#: Events the meter's logbook holds (operation manual: "about 40 000").
LOGBOOK_CAPACITY = 40_000
#: Entries ``GET /v1/logbook`` shows.
SHOWN = 100


class Logbook:
    """Counts events up to ``capacity``; remembers the last ``SHOWN``."""

    def __init__(self, capacity: int = LOGBOOK_CAPACITY, *, prefilled: int = 0) -> None:
        if capacity < 1 or not 0 <= prefilled <= capacity:
            raise ValueError(f"prefilled must be 0..{capacity}, capacity positive")
        self.capacity = capacity
        self.count = prefilled
        self._recent: deque[dict[str, Any]] = deque(maxlen=SHOWN)

    @property
    def full(self) -> bool:
        """True once the logbook is full; it stays full."""
        return self.count >= self.capacity

    def add(self, time: str, event: str, **detail: object) -> bool:
        """Log one event; False (nothing logged) when full."""
        if self.full:
            return False
        self._recent.append({"index": self.count, "time": time, "event": event, **detail})
        self.count += 1
        return True

    def recent(self) -> list[JsonObject]:
        """The latest entries, oldest first."""
        return list(self._recent)
