"""Commands that arrive while the module starts wait, bounded, for the meter to be set up.

A command reaches the module as soon as its MQTT session is up: a stop kept by the broker
across a restart arrives before the journal is open and the meter has been asked who it
is. Answering it at once would end EvseManager's transaction without its record. So it
waits here until the meter is set up (the controller exists and its init succeeded), for
at most ``wait_s``, and is then carried out; only one that cannot be carried out in time,
or that arrives while the module shuts down, is refused. Both are logged.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

from lem_dcbm.clock import Clock

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

#: Until the configuration says otherwise (the manager hands it over after subscribing).
DEFAULT_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class Admitted(Generic[T]):
    """A command let through: what carries it out, and when it arrived (monotonic)."""

    target: T
    arrived: float


class StartupGate(Generic[T]):
    """Holds commands until ``open`` hands over what carries them out."""

    def __init__(self, clock: Clock, wait_s: float = DEFAULT_WAIT_S) -> None:
        self._clock = clock
        #: The longest a command waits for the meter to be set up.
        self.wait_s = wait_s
        self._target: T | None = None
        self._ready = threading.Event()
        self._closing = threading.Event()
        #: Set by ``open`` and ``close``: wakes a waiting command.
        self._wake = threading.Event()

    def open(self, target: T) -> None:
        """The meter is set up: let commands through to ``target``."""
        self._target = target
        self._ready.set()
        self._wake.set()

    def close(self) -> None:
        """Shutdown: commands still waiting are refused at once."""
        self._closing.set()
        self._wake.set()

    @property
    def is_open(self) -> bool:
        """True once the meter is set up."""
        return self._ready.is_set()

    def admit(self, what: str) -> Admitted[T] | str:
        """Wait for the meter to be set up; return what carries ``what`` out, or why not.

        ``what`` names the command in the log (e.g. ``stop_transaction of tx-1``).
        """
        arrived = self._clock.monotonic()
        if self._ready.is_set() and self._target is not None:
            return Admitted(self._target, arrived)
        if self._closing.is_set():
            return self._refuse(what, "the module is shutting down")
        _LOGGER.warning(
            "%s arrived while the module is starting: waiting up to %g s for the meter to be "
            "set up",
            what,
            self.wait_s,
        )
        deadline = arrived + self.wait_s
        left = self.wait_s
        while left > 0 and not self._clock.wait(self._wake, left):
            left = deadline - self._clock.monotonic()
        target = self._target if self._ready.is_set() else None
        waited = self._clock.monotonic() - arrived
        if target is not None:
            _LOGGER.info("meter set up after %.1f s: carrying out %s", waited, what)
            return Admitted(target, arrived)
        if self._closing.is_set():
            return self._refuse(what, "the module is shutting down")
        return self._refuse(
            what,
            f"the meter was not set up within {self.wait_s:g} s of the command "
            "(startup_command_wait_ms; the meter is unreachable, see CommunicationFault)",
        )

    def _refuse(self, what: str, reason: str) -> str:
        message = f"{what} refused: {reason}"
        _LOGGER.error(message)
        return message
