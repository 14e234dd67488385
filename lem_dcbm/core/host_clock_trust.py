"""Whether this host's clock may be written into the meter: a second opinion on the time.

Without NTP configured the meter gets its time from the host, and every signed record
carries that time. A charger often boots with a wrong clock until its own NTP client
corrects it, so the host time counts only with evidence that it is right:

- the kernel says its clock is synchronised (``adjtimex``: no ``TIME_ERROR``, no
  ``STA_UNSYNC``, and a maximum error within the bound): an NTP, chrony or
  systemd-timesyncd client that has a source sets that state, a free-running clock never;
- or the meter's own clock, whose time sync is still valid, agrees with the host within
  the bound: the write then only renews the meter's 48 h validity.

Without either, the meter keeps its clock. On a first boot (the meter's sync not valid and
no evidence for the host) nothing is written: the meter refuses transactions until the host
clock can be trusted, because a record stamped with an unchecked time, flagged by the meter
as synchronised, would misstate the bill. ``host_clock_trust: always`` restores the blind
trust for hosts whose time service cannot be seen by the kernel.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from lem_dcbm.errors import LemDcbmError
from lem_dcbm.meter.models import MeterStatus

_LOGGER = logging.getLogger(__name__)

#: The ``host_clock_trust`` values: whose word makes the host time fit for the meter.
MODES = ("kernel-or-meter", "meter", "always")
DEFAULT_MODE = "kernel-or-meter"
DEFAULT_MAX_SKEW_S = 60.0
#: ``VendorWarning`` sub_type while the host time is kept out of the meter.
HOST_CLOCK_UNTRUSTED = "HostClockUntrusted"

#: ``adjtimex`` return value: the clock is not synchronised.
TIME_ERROR = 5
#: ``timex.status`` bits (linux/timex.h).
STA_UNSYNC = 0x0040
STA_CLOCKERR = 0x1000
_STATUS_FLAGS = ((STA_UNSYNC, "STA_UNSYNC"), (STA_CLOCKERR, "STA_CLOCKERR"))
#: The meter's ``time`` has whole seconds: a truncation is no disagreement.
_METER_TIME_RESOLUTION_S = 1.0


class HostClockUntrusted(LemDcbmError):
    """The host time was not written: nothing vouches for it and the meter's sync is invalid."""


@dataclass(frozen=True, slots=True)
class KernelClock:
    """What the kernel says about its own clock."""

    synchronised: bool
    #: ``timex.maxerror`` in seconds; None when the kernel could not be asked.
    max_error_s: float | None
    #: How the state reads, for log lines (``adjtimex: TIME_ERROR, STA_UNSYNC``).
    detail: str


KernelProbe = Callable[[], KernelClock]


@functools.cache
def _timex_type() -> type:
    """``struct timex`` as a ctypes structure, built at the first question to the kernel.

    ctypes is imported here, not with the module: a module whose meter keeps time by NTP,
    or that trusts the meter's clock or ``always``, never asks the kernel.
    """
    import ctypes

    class _Timex(ctypes.Structure):
        """``struct timex`` (linux/timex.h); C ``long`` follows the platform, as the kernel's."""

        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("constant", ctypes.c_long),
            ("precision", ctypes.c_long),
            ("tolerance", ctypes.c_long),
            ("time_sec", ctypes.c_long),
            ("time_usec", ctypes.c_long),
            ("tick", ctypes.c_long),
            ("ppsfreq", ctypes.c_long),
            ("jitter", ctypes.c_long),
            ("shift", ctypes.c_int),
            ("stabil", ctypes.c_long),
            ("jitcnt", ctypes.c_long),
            ("calcnt", ctypes.c_long),
            ("errcnt", ctypes.c_long),
            ("stbcnt", ctypes.c_long),
            ("tai", ctypes.c_int),
            # The kernel's reserved tail, and room to spare should a libc lay it out larger.
            ("reserved", ctypes.c_int * 32),
        ]

    return _Timex


def kernel_clock_from(returned: int, status: int, max_error_us: int) -> KernelClock:
    """Judge an ``adjtimex`` answer: its return value, ``status`` and ``maxerror`` (µs)."""
    flags = [name for bit, name in _STATUS_FLAGS if status & bit]
    state = ["TIME_ERROR" if returned == TIME_ERROR else f"state {returned}", *flags]
    max_error_s = max_error_us / 1e6
    detail = f"adjtimex: {', '.join(state)}, maximum error {max_error_s:g} s"
    synchronised = returned != TIME_ERROR and not status & (STA_UNSYNC | STA_CLOCKERR)
    return KernelClock(synchronised, max_error_s, detail)


def read_kernel_clock() -> KernelClock:
    """Ask the kernel (``adjtimex`` with no modes: reads only, needs no privilege)."""
    import ctypes

    try:
        # The process's own symbols hold libc's: no ctypes.util.find_library, which runs
        # ldconfig in a child process (and imports subprocess) to find the same library.
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _timex_type()()
        returned = int(libc.adjtimex(ctypes.byref(timex)))
    except (OSError, AttributeError) as err:
        return KernelClock(False, None, f"adjtimex unavailable: {err}")
    if returned < 0:
        errno = ctypes.get_errno()
        return KernelClock(False, None, f"adjtimex failed: errno {errno}")
    return kernel_clock_from(returned, int(timex.status), int(timex.maxerror))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the host time may go into the meter, and the evidence either way."""

    trusted: bool
    reason: str
    #: The meter's own time sync is valid; None when the meter was not asked.
    meter_sync_valid: bool | None = None


class HostClockCheck:
    """Judges the host clock by the kernel's state and by the meter's still-valid clock."""

    def __init__(
        self,
        mode: str = DEFAULT_MODE,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        *,
        kernel: KernelProbe = read_kernel_clock,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"host clock trust must be one of {MODES}, not {mode!r}")
        if not max_skew_s > 0:
            raise ValueError(f"the host clock's maximum skew must be positive, not {max_skew_s}")
        self.mode = mode
        self.max_skew_s = max_skew_s
        self._kernel = kernel

    def judge(self, host_now: Callable[[], datetime], meter: Callable[[], MeterStatus]) -> Verdict:
        """The verdict on the host time; ``meter`` (a status read) may raise ``MeterError``."""
        if self.mode == "always":
            return Verdict(True, "host_clock_trust is 'always'")
        kernel: KernelClock | None = None
        if self.mode == "kernel-or-meter":
            kernel = self._kernel()
            within = kernel.max_error_s is not None and kernel.max_error_s <= self.max_skew_s
            if kernel.synchronised and within:
                return Verdict(True, f"the kernel clock is synchronised ({kernel.detail})")
        before = host_now()
        status = meter()
        after = host_now()
        meter_says = self._meter_evidence(status, before, after)
        if meter_says.trusted:
            return meter_says
        kernel_says = (
            f"the kernel clock is not synchronised ({kernel.detail})"
            if kernel is not None and not kernel.synchronised
            else f"the kernel's maximum error exceeds {self.max_skew_s:g} s ({kernel.detail})"
            if kernel is not None
            else "the kernel's clock state is not consulted (host_clock_trust is 'meter')"
        )
        return Verdict(False, f"{kernel_says}; {meter_says.reason}", meter_says.meter_sync_valid)

    def _meter_evidence(self, status: MeterStatus, before: datetime, after: datetime) -> Verdict:
        if not status.time_sync_ok:
            return Verdict(False, "the meter's own time sync is not valid", False)
        try:
            meter_time = datetime.fromisoformat(status.time.replace("Z", "+00:00"))
        except ValueError:
            meter_time = None
        if meter_time is None or meter_time.tzinfo is None:
            return Verdict(False, f"the meter's time {status.time!r} cannot be read", True)
        meter_utc = meter_time.astimezone(timezone.utc)
        # The meter read its clock somewhere between ``before`` and ``after``.
        if meter_utc < before:
            skew = (before - meter_utc).total_seconds() - _METER_TIME_RESOLUTION_S
        elif meter_utc > after:
            skew = (meter_utc - after).total_seconds()
        else:
            skew = 0.0
        host = before + (after - before) / 2
        offset = _signed(host - meter_utc)
        if max(skew, 0.0) <= self.max_skew_s:
            return Verdict(
                True,
                f"the host clock agrees with the meter's valid clock ({offset} off, "
                f"within {self.max_skew_s:g} s)",
                True,
            )
        return Verdict(
            False,
            f"the host clock is {offset} off the meter's valid clock "
            f"({meter_utc:%Y-%m-%dT%H:%M:%SZ}), more than {self.max_skew_s:g} s",
            True,
        )


def _signed(delta: timedelta) -> str:
    """``+259200 s`` (host ahead of the meter) or ``-12 s`` (behind)."""
    seconds = delta.total_seconds()
    return f"{'+' if seconds >= 0 else '-'}{abs(seconds):.0f} s"
