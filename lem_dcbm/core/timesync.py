"""Keeping the meter's clock valid: deadline logic over an injected clock.

The meter refuses transactions without a valid time sync, which expires 48 h after the
last one, and it persists settings reliably only once it has been powered for two
minutes. So the clock is written at init, again once that window has passed, then
daily and before every start; with NTP configured the NTP settings are written until
one write lands after the window, and then left to the meter.

Without NTP, the host's time is written only when it can be trusted
(:mod:`lem_dcbm.core.host_clock_trust`); otherwise nothing is written, the meter keeps its
clock, the reason is said once (the ``HostClockUntrusted`` alert, whose sink logs it, or
a log line without one), and the host clock is judged again every ``retry_after_failure_s``.

Timezone and DST rules are optional: a meter (or mock) that refuses them with a 4xx is
told once in the log, and they are left out for the rest of the run. Failed syncs are
retried after a minute, doubling with each failure in a row up to an hour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lem_dcbm.clock import Clock
from lem_dcbm.core.host_clock_trust import (
    HOST_CLOCK_UNTRUSTED,
    HostClockCheck,
    HostClockUntrusted,
    Verdict,
)
from lem_dcbm.core.ports import Alerts, MeterApi
from lem_dcbm.errors import LemDcbmError, MeterStatusError
from lem_dcbm.json_types import JsonObject

_LOGGER = logging.getLogger(__name__)


class SettingRejected(LemDcbmError):
    """The meter answered ``result: 0`` to a settings write (e.g. during a transaction)."""


@dataclass(frozen=True, slots=True)
class NtpServer:
    """One NTP server the meter should ask."""

    ip_address: str
    port: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ClockSettings:
    """What a sync writes besides the time: NTP servers, timezone and DST rules."""

    timezone: str
    dst: dict[str, Any]
    ntp_servers: tuple[NtpServer, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeSyncTiming:
    """Durations that tests shrink; the defaults are the meter's."""

    settings_window_s: float = 120.0
    resync_interval_s: float = 24 * 3600.0
    retry_after_failure_s: float = 60.0
    #: Failures in a row double the retry delay up to this.
    max_retry_after_failure_s: float = 3600.0


@dataclass
class _Plan:
    """A sync in progress: when it began and the writes still to do."""

    started: float
    writes: list[tuple[str, Callable[[], dict[str, Any]]]]


#: Writes a sync can do without: the meter keeps valid UTC time without them.
OPTIONAL_WRITES = frozenset({"timezone", "daylight saving rules"})


class TimeSync:
    """Decides when to write the meter's clock or NTP settings, and writes them.

    Not thread-safe on purpose: the controller makes every call under its own lock.
    """

    def __init__(
        self,
        meter: MeterApi,
        clock: Clock,
        *,
        timezone: str,
        dst: dict[str, object],
        ntp_servers: tuple[NtpServer, ...] = (),
        timing: TimeSyncTiming | None = None,
        host_clock: HostClockCheck | None = None,
        alerts: Alerts | None = None,
    ) -> None:
        """``host_clock`` None writes the host time unjudged (a caller that vouches for it)."""
        self._meter = meter
        self._clock = clock
        self._timezone = timezone
        self._dst = dst
        self._ntp_servers = ntp_servers
        self._timing = timing or TimeSyncTiming()
        self._window_end = clock.monotonic() + self._timing.settings_window_s
        self._next_due = clock.monotonic()
        self._ntp_settled = False
        self._plan: _Plan | None = None
        #: Optional writes the meter refused; left out for the rest of the run.
        self._refused: set[str] = set()
        self._failures = 0
        #: The longest settings write seen, to judge whether another fits before a deadline.
        self._slowest_write_s = 0.0
        self._host_clock = host_clock
        self._alerts = alerts
        #: Why the host time is kept out of the meter, None while it is trusted.
        self._untrusted: Verdict | None = None
        #: When the last clock write of a completed sync began (UTC mode), None before one.
        self._synced_at: float | None = None
        #: Timezone and DST rules written after the settings window: the meter keeps them,
        #: and each write is an entry in its logbook, so they are not written again.
        self._rules_kept = False

    @property
    def settings(self) -> ClockSettings:
        """The NTP servers, timezone and DST rules in use."""
        return ClockSettings(timezone=self._timezone, dst=self._dst, ntp_servers=self._ntp_servers)

    def reconfigure(self, settings: ClockSettings) -> None:
        """Use ``settings`` from now on and make a sync due at once.

        The controller syncs only while no transaction runs (the meter refuses time writes
        during one), so a running transaction keeps the settings it started with.
        """
        if settings == self.settings:
            return
        self._timezone = settings.timezone
        self._dst = settings.dst
        self._ntp_servers = settings.ntp_servers
        self._ntp_settled = False
        self._plan = None
        self._refused.clear()  # a new value deserves a new try
        self._rules_kept = False
        self._failures = 0
        self._next_due = self._clock.monotonic()
        _LOGGER.info("clock settings changed; written to the meter at the next sync")

    @property
    def synced_at(self) -> float | None:
        """Monotonic start of the last completed UTC sync (None before one, or with NTP)."""
        return self._synced_at

    @property
    def next_due(self) -> float | None:
        """Monotonic time of the next planned write, None when nothing more is planned."""
        return None if self._ntp_settled else self._next_due

    def restart_window(self) -> None:
        """Start the settings window anew (module start, or a meter power cycle)."""
        self._window_end = self._clock.monotonic() + self._timing.settings_window_s

    @property
    def untrusted(self) -> Verdict | None:
        """Why the host time is kept out of the meter now; None while it is trusted."""
        return self._untrusted

    def sync(self) -> bool:
        """Write clock (or NTP), timezone and DST now; raise on the first failure.

        True when written (or left to the meter's NTP). An untrusted host clock is no
        failure while the meter's own sync is valid: False, the meter keeps its clock and
        its sync is not renewed. With the meter's sync invalid it raises
        ``HostClockUntrusted``.
        """
        if self._ntp_settled:
            return True
        self._plan = None  # a sync in parts gives way to a whole one
        done = self._run(deadline=None)
        untrusted = self._untrusted
        if not done and untrusted is not None and not untrusted.meter_sync_valid:
            raise HostClockUntrusted(
                f"the host clock is not trusted, so it is not written into the meter: "
                f"{untrusted.reason}"
            )
        return done

    def sync_if_due(self, deadline: float | None = None) -> bool:
        """Sync when due; log failures instead of raising. True once a sync completed.

        With a ``deadline`` (monotonic) the writes stop before one would end after it and
        go on at the next call: the ready loop keeps its beat with a slow meter.
        """
        due = self.next_due
        if due is None or self._clock.monotonic() < due:
            return False
        try:
            return self._run(deadline)
        except LemDcbmError as err:
            _LOGGER.warning(
                "meter clock sync failed, retrying in %.0f s: %s",
                self._timing.retry_after_failure_s,
                err,
            )
            return False

    def _run(self, deadline: float | None) -> bool:
        """Do the planned writes (planning them first); True when all are done."""
        if self._plan is None:
            if not self._host_time_trusted():
                return False
            self._plan = _Plan(self._clock.monotonic(), self._writes())
        plan = self._plan
        while plan.writes:
            started = self._clock.monotonic()
            if deadline is not None and started + self._slowest_write_s > deadline:
                return False
            what, make_patch = plan.writes[0]
            try:
                self._write(what, make_patch())
            except MeterStatusError as err:
                if what not in OPTIONAL_WRITES or not 400 <= err.status < 500:
                    self._failed(started)
                    raise
                self._refused.add(what)
                _LOGGER.warning(
                    "the meter refuses the %s setting (%s); left as the meter has it and not "
                    "written again this run",
                    what,
                    err,
                )
            except Exception:
                self._failed(started)
                raise
            self._slowest_write_s = max(self._slowest_write_s, self._clock.monotonic() - started)
            plan.writes.pop(0)
        self._plan = None
        self._finished(plan.started)
        return True

    def _host_time_trusted(self) -> bool:
        """Judge the host clock before a sync that writes it; say so once when it is not."""
        if self._ntp_servers or self._host_clock is None:
            self._trusted_again("the meter takes its time from NTP now")
            return True
        started = self._clock.monotonic()
        try:
            verdict = self._host_clock.judge(self._clock.utc_now, self._meter.status)
        except Exception:
            self._failed(started)
            raise
        if verdict.trusted:
            self._trusted_again(f"host clock trusted again: {verdict.reason}")
            return True
        # Judging is cheap (a status read at most): again after a minute, not backing off.
        self._next_due = started + self._timing.retry_after_failure_s
        if self._untrusted is None:
            message = _untrusted_message(verdict)
            # One line: an alert sink logs what it raises (or why it only logs it).
            if self._alerts is not None:
                self._alerts.warn(HOST_CLOCK_UNTRUSTED, message)
            else:
                _LOGGER.warning(message)
        self._untrusted = verdict
        return False

    def _trusted_again(self, why: str) -> None:
        """End an untrusted spell: say why once and clear the alert."""
        if self._untrusted is None:
            return
        self._untrusted = None
        _LOGGER.info(why)
        if self._alerts is not None:
            self._alerts.clear(HOST_CLOCK_UNTRUSTED)

    def _failed(self, started: float) -> None:
        self._plan = None
        self._failures += 1
        delay = self._timing.retry_after_failure_s * 2 ** min(self._failures - 1, 16)
        self._next_due = started + min(delay, self._timing.max_retry_after_failure_s)

    def _writes(self) -> list[tuple[str, Callable[[], JsonObject]]]:
        """The settings writes of one sync, each making its body when it is sent."""
        first: tuple[str, Callable[[], dict[str, Any]]]
        if self._ntp_servers:
            first = ("NTP settings", lambda: {"ntp": self._ntp_body()})
        else:
            first = ("UTC time", self._utc_patch)
        optional: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("timezone", lambda: {"time": {"tz": self._timezone}}),
            ("daylight saving rules", lambda: {"time": {"dst": self._dst}}),
        ]
        if self._rules_kept:
            return [first]
        return [first, *(write for write in optional if write[0] not in self._refused)]

    def _utc_patch(self) -> JsonObject:
        return {"time": {"utc": self._clock.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def _finished(self, started: float) -> None:
        self._failures = 0
        self._synced_at = None if self._ntp_servers else started
        after_window = started >= self._window_end
        self._rules_kept = self._rules_kept or after_window
        if self._ntp_servers and after_window:
            self._ntp_settled = True
            _LOGGER.info("NTP settings written after the settings window; the meter keeps time")
        elif after_window:
            self._next_due = started + self._timing.resync_interval_s
        else:
            # Written inside the window: may not persist, so write again once it has passed.
            self._next_due = self._window_end
        _LOGGER.info("meter clock synchronised (%s)", "NTP" if self._ntp_servers else "UTC")

    def _ntp_body(self) -> JsonObject:
        return {
            "servers": [{"ipAddress": s.ip_address, "port": s.port} for s in self._ntp_servers],
            "syncPeriod": 120,
            "ntpActivated": True,
        }

    def _write(self, what: str, patch: dict[str, object]) -> None:
        result = self._meter.put_settings(patch)
        if not result.accepted:
            raise SettingRejected(
                f"the meter refused the {what} (result 0; a transaction may be running)"
            )


def _untrusted_message(verdict: Verdict) -> str:
    """The one line an operator reads while the host time is kept out of the meter."""
    if verdict.meter_sync_valid:
        consequence = (
            "the meter keeps its own clock, whose time sync stays valid for at most 48 h "
            "after its last sync; fix the host's time synchronisation before then, or the "
            "meter refuses new transactions"
        )
    else:
        consequence = (
            "the meter's time sync is not valid, so it refuses transactions until the host "
            "clock can be trusted"
        )
    return (
        f"host clock not written into the meter: {verdict.reason}; {consequence} "
        "(see host_clock_trust)"
    )
