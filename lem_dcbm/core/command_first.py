"""A lock that commands take ahead of background work.

Commands (start, stop) block for it; background work (clock sync, missing records) takes
it only when it is free and no command waits, and asks between its steps whether one
does (``commands_waiting``), so a command waits for at most the one step in progress.
Reentrant: a command's steps may take it again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


class CommandFirstLock:
    """A reentrant lock whose blocking takers (commands) go ahead of background work."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiting = 0
        self._count = threading.Lock()

    @property
    def commands_waiting(self) -> int:
        """Commands blocked for the lock now: background work gives way between its steps."""
        return self._waiting

    def __enter__(self) -> None:
        """Take the lock as a command: blocks, and background work sees the wait."""
        with self._count:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self._waiting -= 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()

    @contextmanager
    def background(self) -> Iterator[bool]:
        """Take the lock for background work if it is free and no command waits.

        Yields whether it was taken; the work runs only then.
        """
        taken = not self._waiting and self._lock.acquire(blocking=False)
        try:
            yield taken
        finally:
            if taken:
                self._lock.release()
