"""The meter's own health bits from ``/v1/status`` as EVerest errors.

A bit that blocks transactions or says the meter itself failed raises
``VendorError`` (EvseManager stops charging); an indicator bit raises ``VendorWarning``
(charging goes on). The sub_type is the bit's name, and each error clears when its bit
does. ``timeSyncStatusIsOk`` false is an error on purpose: the meter refuses new
transactions without a valid time sync and flags the readings of running ones; the
module's clock sync usually fixes it, and the error clears at the next poll after that.

``/v1/status`` is polled every few seconds, not every publication, to keep the meter's
load low; while the meter is unreachable ``CommunicationFault`` says it all, so the
ready loop does not poll then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lem_dcbm.clock import Clock
from lem_dcbm.core.ports import EverestOutputs, MeterApi
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.meter.models import MeterStatus

_LOGGER = logging.getLogger(__name__)

VENDOR_ERROR = "VendorError"
VENDOR_WARNING = "VendorWarning"
#: How often ``/v1/status`` is read when nothing else says otherwise.
DEFAULT_POLL_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class HealthBit:
    """One bit of ``/v1/status`` and what its bad value means."""

    #: The bit's name in ``status.bits`` or ``errors.bits``; also the error's sub_type.
    name: str
    #: True for ``errors.bits``, False for ``status.bits``.
    in_errors: bool
    #: The value that is a problem.
    bad_value: bool
    #: ``VendorError`` or ``VendorWarning``.
    error: str
    #: What the problem means, for the error message.
    meaning: str

    @property
    def severity(self) -> str:
        """``High`` for errors, ``Low`` for warnings."""
        return "High" if self.error == VENDOR_ERROR else "Low"


def _meter_failure(name: str, meaning: str) -> HealthBit:
    return HealthBit(name, True, True, VENDOR_ERROR, meaning)


#: Every watched bit; ``transactionIsOnGoing`` is state, not health.
HEALTH_BITS: tuple[HealthBit, ...] = (
    HealthBit(
        "suLinkStatusIsOk",
        False,
        False,
        VENDOR_ERROR,
        "the link to the sensor unit is down; the meter refuses transactions",
    ),
    HealthBit(
        "muFatalErrorOccured",
        False,
        True,
        VENDOR_ERROR,
        "the measuring unit reports a fatal error; the meter refuses transactions",
    ),
    HealthBit(
        "timeSyncStatusIsOk",
        False,
        False,
        VENDOR_ERROR,
        "the meter's time sync is not valid; it refuses new transactions",
    ),
    # Tampering is an indicator for the meter, but a tampered Eichrecht meter cannot bill
    # lawfully: it is an error here, so EvseManager stops charging.
    HealthBit(
        "tamperingIsDetected",
        False,
        True,
        VENDOR_ERROR,
        "the meter detected tampering; its records cannot be used for billing",
    ),
    HealthBit(
        "overTemperatureIsDetected",
        False,
        True,
        VENDOR_WARNING,
        "the meter reports over-temperature",
    ),
    HealthBit(
        "reversedVoltage",
        False,
        True,
        VENDOR_WARNING,
        "the meter saw a reversed voltage (cleared only by a meter restart)",
    ),
    HealthBit(
        "suMeasureFailureOccurred",
        False,
        True,
        VENDOR_WARNING,
        "the sensor unit reports a measurement failure",
    ),
    _meter_failure("muInitIsFailed", "the measuring unit failed to initialise"),
    _meter_failure("suStateIsInvalid", "the sensor unit is in an invalid state"),
    _meter_failure("versionCheckIsFailed", "the meter's firmware version check failed"),
    _meter_failure("muRngInitIsFailed", "the measuring unit's random generator failed"),
    _meter_failure("muDataIntegrityIsFailed", "the measuring unit's data integrity check failed"),
    _meter_failure("muFwIntegrityIsFailed", "the measuring unit's firmware integrity failed"),
    _meter_failure("suIntegrityIsFailed", "the sensor unit's integrity check failed"),
    _meter_failure("logbookIntegrityIsFailed", "the meter's logbook integrity check failed"),
    _meter_failure("logbookIsFull", "the meter's logbook is full; the meter stops for good"),
    _meter_failure("memoryAccessIsFailed", "the meter cannot access its memory"),
    _meter_failure("muStateIsFailed", "the measuring unit is in a failed state"),
)


class HealthMonitor:
    """Polls ``/v1/status`` on its own schedule and mirrors bad bits as EVerest errors."""

    def __init__(
        self,
        meter: MeterApi,
        outputs: EverestOutputs,
        clock: Clock,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self._meter = meter
        self._outputs = outputs
        self._clock = clock
        self._interval = poll_interval_s
        self._next_due = clock.monotonic()
        self._active: set[str] = set()
        self._failure_logged = False

    @property
    def active(self) -> frozenset[str]:
        """Names of the bits whose error or warning is raised now."""
        return frozenset(self._active)

    def poll_if_due(self) -> bool:
        """Read ``/v1/status`` if the interval has passed; True when a status was read."""
        now = self._clock.monotonic()
        if now < self._next_due:
            return False
        self._next_due = now + self._interval
        try:
            status = self._meter.status()
        except LemDcbmError as err:
            # The ready loop reports an unreachable meter; one log line is enough here.
            log = _LOGGER.debug if self._failure_logged else _LOGGER.warning
            log("meter status not read, health unchanged: %s", err)
            self._failure_logged = True
            return False
        self._failure_logged = False
        self.observe(status)
        return True

    def observe(self, status: MeterStatus) -> None:
        """Raise what is bad in ``status`` and clear what is fine again."""
        for bit in HEALTH_BITS:
            bits = status.error_bits if bit.in_errors else status.bits
            value = bits.get(bit.name)
            if value is None:
                continue  # a firmware that does not report the bit: nothing is known
            if value == bit.bad_value and bit.name not in self._active:
                self._active.add(bit.name)
                message = f"{bit.name} is {str(value).lower()}: {bit.meaning}"
                self._outputs.raise_error(bit.error, bit.name, message, bit.severity)
            elif value != bit.bad_value and bit.name in self._active:
                self._active.discard(bit.name)
                _LOGGER.info("meter health: %s is %s again", bit.name, str(value).lower())
                self._outputs.clear_error(bit.error, bit.name)
