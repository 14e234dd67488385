"""One item at a time on a worker thread, in arrival order: how both adapters run calls.

The meter handles one transaction request at a time, and the network thread must never
wait for it. Items still queued at shutdown are handed to ``turn_away`` instead of
being run; no exception ends the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_LOGGER = logging.getLogger(__name__)

Item = TypeVar("Item")


class SerialWorker(Generic[Item]):
    """Runs ``execute(item)`` for each queued item on the thread ``name``."""

    def __init__(
        self,
        name: str,
        execute: Callable[[Item], None],
        turn_away: Callable[[Item], None],
        *,
        what: str = "call",
    ) -> None:
        self._name = name
        self._what = what
        self._execute = execute
        self._refuse_queued = turn_away
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._busy = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while an item is being handled."""
        return self._busy.is_set()

    @property
    def waiting(self) -> int:
        """Items queued and not yet started."""
        return self._queue.qsize()

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called."""
        return self._stopping.is_set()

    def start(self) -> None:
        """Start the worker thread."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._worker.start()

    def put(self, item: Item) -> None:
        """Queue ``item``."""
        self._queue.put(item)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the item in progress; turn the queued ones away."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout_s)
            if self._worker.is_alive():
                _LOGGER.warning(
                    "a %s was still running after %.1f s at shutdown", self._what, timeout_s
                )

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if self._stopping.is_set():
                    self._refuse_queued(item)
                else:
                    self._busy.set()
                    self._execute(item)
            except Exception:
                _LOGGER.exception("handling a %s failed", self._what)
            finally:
                self._busy.clear()
