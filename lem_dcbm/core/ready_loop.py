"""The module's main loop: init the meter, then publish ``powermeter`` on a fixed beat.

Deadlines sit on the monotonic clock, ``interval`` apart from the first one: a slow
meter answer shortens the next wait instead of shifting every later publication. The
beat thread only reads, publishes and watches health; background work (clock sync,
missing records) runs on a thread of its own (``run_housekeeping``), so the beat never
waits for a command, a settings write or a record fetch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from lem_dcbm.clock import Clock
from lem_dcbm.core.controller import MeterController
from lem_dcbm.core.health_monitor import HealthMonitor
from lem_dcbm.core.ports import EverestOutputs
from lem_dcbm.core.temperature_monitor import TemperatureMonitor
from lem_dcbm.errors import MeterError
from lem_dcbm.retry import RetryPolicy

_LOGGER = logging.getLogger(__name__)

COMMUNICATION_FAULT = "CommunicationFault"
#: The longest housekeeping sleeps with nothing due: a record a command left to fetch waits
#: at most this long beyond its own backoff.
HOUSEKEEPING_MAX_PAUSE_S = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class LoopTiming:
    """Publication interval and the start-up attempts to reach the meter.

    Start-up never gives up: after ``1 + init_retries`` failed attempts, each
    ``init_retry_delay_s`` apart, the module says once that the meter is missing and goes
    on asking at the same pace. An exiting module would make the EVerest manager stop
    every module of the charger, and a meter that is powered later is used without a
    restart. ``CommunicationFault`` is raised from the first failed attempt on.
    """

    interval_s: float = 1.0
    #: Attempts after the first failed one before the module reports the meter missing.
    init_retries: int = 25
    #: Pause between two start-up attempts, before and after the retries are used up.
    init_retry_delay_s: float = 10.0

    @property
    def init_policy(self) -> RetryPolicy:
        """Start-up attempts: ``init_retry_delay_s`` apart, for ever."""
        return RetryPolicy(
            attempts=None,
            first_delay_s=self.init_retry_delay_s,
            max_delay_s=self.init_retry_delay_s,
            retryable=lambda error: isinstance(error, MeterError),
        )


class ReadyLoop:
    """Runs init with retries, then reads and publishes once per interval until stopped."""

    def __init__(
        self,
        controller: MeterController,
        outputs: EverestOutputs,
        clock: Clock,
        timing: LoopTiming,
        *,
        on_cycle: Callable[[], None] | None = None,
        on_meter_answer: Callable[[], None] | None = None,
        temperature: TemperatureMonitor | None = None,
        health: HealthMonitor | None = None,
        on_initialized: Callable[[], None] | None = None,
    ) -> None:
        self._controller = controller
        self._outputs = outputs
        self._clock = clock
        self._timing = timing
        self._on_cycle = on_cycle
        # The heartbeat: called only after a cycle whose reading the meter answered.
        self._on_meter_answer = on_meter_answer
        self._temperature = temperature
        self._health = health
        self._fault_raised = False
        self._initialized = threading.Event()
        #: Called once the meter's init succeeded: commands may go to the controller.
        self._on_initialized = on_initialized

    def run(self, stop: threading.Event) -> None:
        """Init the meter, then publish until ``stop`` is set."""
        if not self._initialize(stop):
            return
        self._initialized.set()
        if self._on_initialized is not None:
            self._on_initialized()
        self._outputs.publish_public_key_ocmf(self._controller.public_key_ocmf)
        deadline = self._clock.monotonic()
        while not stop.is_set():
            self._cycle()
            deadline += self._timing.interval_s
            now = self._clock.monotonic()
            if now > deadline + self._timing.interval_s:
                # Far behind (a meter timeout): skip the missed beats instead of bursting.
                missed = int((now - deadline) // self._timing.interval_s)
                deadline += missed * self._timing.interval_s
            self._clock.wait(stop, deadline - now)

    def run_housekeeping(self, stop: threading.Event) -> None:
        """Once init succeeded, do the controller's background work when it is due."""
        while not self._initialized.is_set():
            if stop.wait(0.1):
                return
        while not stop.is_set():
            started = self._clock.monotonic()
            try:
                self._controller.housekeeping(started + self._timing.interval_s)
            except Exception:  # noqa: BLE001 - housekeeping must never end the thread
                _LOGGER.exception("housekeeping failed")
            self._clock.wait(stop, self.housekeeping_pause(started))

    def housekeeping_pause(self, started: float) -> float:
        """How long housekeeping sleeps: until its next work, one interval to a few at most.

        A command can plan new work (a record to fetch) at any time, so the pause never
        exceeds ``HOUSEKEEPING_MAX_PAUSE_S``; with nothing due it saves the wake-ups.
        """
        now = self._clock.monotonic()
        floor = started + self._timing.interval_s - now
        ceiling = started + HOUSEKEEPING_MAX_PAUSE_S - now
        due = self._controller.next_background_work
        wanted = ceiling if due is None else due - now
        return max(floor, min(wanted, ceiling))

    def republish_public_key(self) -> None:
        """Publish ``public_key_ocmf`` again (after a broker reconnect) once it is known."""
        key = self._controller.public_key_ocmf
        if key:
            self._outputs.publish_public_key_ocmf(key)

    def _initialize(self, stop: threading.Event) -> bool:
        """Init until it succeeds (True) or ``stop`` is set (False)."""
        policy = self._timing.init_policy
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self._controller.initialize()
            except MeterError as err:
                self._communication_failed(err)
                if attempts == 1 + self._timing.init_retries:
                    _LOGGER.error(
                        "meter still unreachable after %d start-up attempts; "
                        "not giving up: asking again every %g s",
                        attempts,
                        policy.delay(attempts - 1),
                    )
                raise

        if stop.is_set():
            return False
        try:
            policy.run(
                attempt,
                what="initialise the meter",
                sleep=lambda pause: self._clock.wait(stop, pause),
                monotonic=self._clock.monotonic,
                quiet=True,  # said above, once per outage
            )
        except MeterError:
            return False  # stopped
        return True

    def _cycle(self) -> None:
        try:
            value = self._controller.read_powermeter()
        except MeterError as err:
            self._communication_failed(err)
        except Exception:  # noqa: BLE001 - a bad answer must not end the loop
            _LOGGER.exception("reading the meter failed unexpectedly")
        else:
            # The heartbeat's file calls go first: after the publication paho's network
            # thread wakes to send it, and each call here would hand it the GIL and back.
            if self._on_meter_answer is not None:
                self._on_meter_answer()
            self._outputs.publish_powermeter(value)
            _LOGGER.debug("powermeter published at monotonic %.3f", self._clock.monotonic())
            self._communication_restored()
            if self._temperature is not None:
                self._temperature.observe(value)
        # An unreachable meter is CommunicationFault alone; its health is polled once back.
        if self._health is not None and not self._fault_raised:
            try:
                self._health.poll_if_due()
            except Exception:  # noqa: BLE001 - a bad status answer must not end the loop
                _LOGGER.exception("checking the meter's health failed")
        if self._on_cycle is not None:
            self._on_cycle()

    def _communication_failed(self, err: MeterError) -> None:
        if self._fault_raised:
            _LOGGER.debug("meter still unreachable: %s", err)
            return
        self._fault_raised = True
        _LOGGER.error("meter communication failed: %s", err)
        self._outputs.raise_error(COMMUNICATION_FAULT, "", f"meter communication failed: {err}")

    def _communication_restored(self) -> None:
        if self._fault_raised:
            self._fault_raised = False
            _LOGGER.info("meter communication restored")
            self._outputs.clear_error(COMMUNICATION_FAULT, "")
