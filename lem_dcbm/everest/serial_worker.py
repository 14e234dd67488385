"""One message at a time on a worker thread, in arrival order: how both adapters run calls.

The meter handles one transaction request at a time, and the network thread must never
wait for it. Messages still queued at shutdown are handed to ``turn_away`` instead of
being run; no exception ends the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from lem_dcbm.everest.bus import Message

_LOGGER = logging.getLogger(__name__)

Step = Callable[[Message], None]


class SerialWorker:
    """Runs ``execute(message)`` for each queued message on the thread ``name``."""

    def __init__(self, name: str, execute: Step, turn_away: Step, *, what: str = "call") -> None:
        self._name = name
        self._what = what
        self._execute = execute
        self._refuse_queued = turn_away
        self._queue: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._busy = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while a message is being handled."""
        return self._busy.is_set()

    @property
    def waiting(self) -> int:
        """Messages queued and not yet started."""
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

    def put(self, message: Message) -> None:
        """Queue ``message``."""
        self._queue.put(message)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the message in progress; turn the queued ones away."""
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
            message = self._queue.get()
            if message is None:
                return
            try:
                if self._stopping.is_set():
                    self._refuse_queued(message)
                else:
                    self._busy.set()
                    self._execute(message)
            except Exception:
                _LOGGER.exception("handling a request on %s failed", message.topic)
            finally:
                self._busy.clear()
