"""Keeping the meter's clock valid: deadline logic over an injected clock.

The meter refuses transactions without a valid time sync, which expires 48 h after the
last one, and it persists settings reliably only once it has been powered for two
minutes. So the clock is written at init, again once that window has passed, then
daily and before every start; with NTP configured the NTP settings are written until
one write lands after the window, and then left to the meter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from threading import RLock
from typing import Any

from lem_dcbm.clock import Clock
from lem_dcbm.core.ports import MeterApi
from lem_dcbm.errors import LemDcbmError

_LOGGER = logging.getLogger(__name__)


class SettingRejected(LemDcbmError):
    """The meter answered ``result: 0`` to a settings write (e.g. during a transaction)."""


@dataclass(frozen=True, slots=True)
class NtpServer:
    """One NTP server the meter should ask."""

    ip_address: str
    port: int


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeSyncTiming:
    """Durations that tests shrink; the defaults are the meter's."""

    settings_window_s: float = 120.0
    resync_interval_s: float = 24 * 3600.0
    retry_after_failure_s: float = 60.0


class TimeSync:
    """Decides when to write the meter's clock or NTP settings, and writes them."""

    def __init__(
        self,
        meter: MeterApi,
        clock: Clock,
        *,
        timezone: str,
        dst: dict[str, Any],
        ntp_servers: tuple[NtpServer, ...] = (),
        timing: TimeSyncTiming | None = None,
    ) -> None:
        self._meter = meter
        self._clock = clock
        self._timezone = timezone
        self._dst = dst
        self._ntp_servers = ntp_servers
        self._timing = timing or TimeSyncTiming()
        self._lock = RLock()
        self._window_end = clock.monotonic() + self._timing.settings_window_s
        self._next_due = clock.monotonic()
        self._ntp_settled = False

    @property
    def uses_ntp(self) -> bool:
        """True when NTP servers are configured."""
        return bool(self._ntp_servers)

    @property
    def next_due(self) -> float | None:
        """Monotonic time of the next planned write, None when nothing more is planned."""
        with self._lock:
            return None if self._ntp_settled else self._next_due

    def restart_window(self) -> None:
        """Start the settings window anew (module start, or a meter power cycle)."""
        with self._lock:
            self._window_end = self._clock.monotonic() + self._timing.settings_window_s

    def sync(self) -> None:
        """Write clock (or NTP), timezone and DST now; raise on the first failure."""
        with self._lock:
            if self._ntp_settled:
                return
            now = self._clock.monotonic()
            try:
                if self._ntp_servers:
                    self._write("NTP settings", {"ntp": self._ntp_body()})
                else:
                    utc = self._clock.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")
                    self._write("UTC time", {"time": {"utc": utc}})
                self._write("timezone", {"time": {"tz": self._timezone}})
                self._write("daylight saving rules", {"time": {"dst": self._dst}})
            except Exception:
                self._next_due = now + self._timing.retry_after_failure_s
                raise
            after_window = now >= self._window_end
            if self._ntp_servers and after_window:
                self._ntp_settled = True
                _LOGGER.info("NTP settings written after the settings window; the meter keeps time")
            elif after_window:
                self._next_due = now + self._timing.resync_interval_s
            else:
                # Written inside the window: may not persist, so write again once it has passed.
                self._next_due = self._window_end
            _LOGGER.info("meter clock synchronised (%s)", "NTP" if self._ntp_servers else "UTC")

    def sync_if_due(self) -> bool:
        """Sync when the deadline has passed; log failures instead of raising. True if synced."""
        with self._lock:
            due = self.next_due
            if due is None or self._clock.monotonic() < due:
                return False
            try:
                self.sync()
            except LemDcbmError as err:
                _LOGGER.warning(
                    "meter clock sync failed, retrying in %.0f s: %s",
                    self._timing.retry_after_failure_s,
                    err,
                )
                return False
            return True

    def _ntp_body(self) -> dict[str, Any]:
        servers = [{"ipAddress": s.ip_address, "port": s.port} for s in self._ntp_servers]
        return {"servers": servers, "syncPeriod": 120, "ntpActivated": True}

    def _write(self, what: str, patch: dict[str, Any]) -> None:
        result = self._meter.put_settings(patch)
        if not result.accepted:
            raise SettingRejected(
                f"the meter refused the {what} (result 0; a transaction may be running)"
            )
