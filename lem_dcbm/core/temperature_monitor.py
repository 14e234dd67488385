"""Temperature limits of the meter: a warning and an error level, each with hysteresis.

The hotter of the meter's two sensors counts. A level is reached once that temperature
has stayed at or above it, without a reading below, for the minimum time; it is then
raised once, and cleared once the temperature falls below the level minus the
hysteresis. The defaults (5000 degC) never trigger.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from lem_dcbm.clock import Clock
from lem_dcbm.core.ports import EverestOutputs
from lem_dcbm.core.results import PowermeterValue

_LOGGER = logging.getLogger(__name__)

TEMPERATURE_WARNING = "TemperatureWarning"
TEMPERATURE_ERROR = "TemperatureError"


@dataclass(frozen=True, kw_only=True, slots=True)
class TemperatureLimits:
    """The configured levels (``temperature_*`` config keys)."""

    #: Level that raises ``VendorWarning``/``TemperatureWarning``, degC.
    warning_level_c: float = 5000.0
    #: Level that raises ``VendorError``/``TemperatureError``, degC.
    error_level_c: float = 5000.0
    #: How far below a level the temperature must fall to clear it, K.
    hysteresis_k: float = 3.0
    #: How long a level must be reached without interruption before it counts, s.
    min_time_s: float = 5.0

    def checked(self) -> TemperatureLimits:
        """These limits with an error level below the warning level raised to it (logged)."""
        if self.error_level_c >= self.warning_level_c:
            return self
        _LOGGER.warning(
            "temperature_error_level_C (%.1f degC) is below temperature_warning_level_C "
            "(%.1f degC); using %.1f degC as the error level",
            self.error_level_c,
            self.warning_level_c,
            self.warning_level_c,
        )
        return replace(self, error_level_c=self.warning_level_c)


class _Level:
    """One level's state: reached since when, raised or not."""

    def __init__(self, error: str, sub_type: str, level_c: float, severity: str) -> None:
        self.error = error
        self.sub_type = sub_type
        self.level_c = level_c
        self.severity = severity
        self.since: float | None = None
        self.active = False


class TemperatureMonitor:
    """Raises and clears the temperature warning and error from successive readings."""

    def __init__(self, limits: TemperatureLimits, outputs: EverestOutputs, clock: Clock) -> None:
        self.limits = limits.checked()
        self._outputs = outputs
        self._clock = clock
        self._levels = (
            _Level("VendorWarning", TEMPERATURE_WARNING, self.limits.warning_level_c, "Low"),
            _Level("VendorError", TEMPERATURE_ERROR, self.limits.error_level_c, "High"),
        )

    def set_limits(self, limits: TemperatureLimits) -> None:
        """Judge the next readings by ``limits``; a raised level clears by the new hysteresis."""
        self.limits = limits.checked()
        warning, error = self._levels
        warning.level_c = self.limits.warning_level_c
        error.level_c = self.limits.error_level_c

    def active(self, sub_type: str) -> bool:
        """True while the warning or error named ``sub_type`` is raised."""
        return any(level.active for level in self._levels if level.sub_type == sub_type)

    def observe(self, value: PowermeterValue) -> None:
        """Take the temperatures of one measurement."""
        self.update(value.temperatures)

    def update(self, temperatures: Iterable[float]) -> None:
        """Take one reading of the sensors (degC); readings that are not numbers are ignored."""
        finite = [float(t) for t in temperatures if math.isfinite(t)]
        if not finite:
            return
        hottest = max(finite)
        now = self._clock.monotonic()
        for level in self._levels:
            self._evaluate(level, hottest, now)

    def _evaluate(self, level: _Level, hottest: float, now: float) -> None:
        if level.active:
            clear_below = level.level_c - self.limits.hysteresis_k
            if hottest < clear_below:
                level.active = False
                _LOGGER.info(
                    "%s cleared: the meter's temperature %.1f degC is below %.1f degC",
                    level.sub_type,
                    hottest,
                    clear_below,
                )
                self._outputs.clear_error(level.error, level.sub_type)
            return
        if hottest < level.level_c:
            # Any reading below the level restarts the minimum time.
            level.since = None
            return
        if level.since is None:
            level.since = now
        if now - level.since >= self.limits.min_time_s:
            level.active = True
            level.since = None
            message = (
                f"the meter's temperature is {hottest:.1f} degC, at or above the "
                f"{level.sub_type} level of {level.level_c:.1f} degC"
            )
            self._outputs.raise_error(level.error, level.sub_type, message, level.severity)
