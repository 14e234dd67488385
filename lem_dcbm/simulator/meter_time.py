"""The meter's wall clock: UTC plus its timezone offset and daylight saving rule."""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

_TZ = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_HOUR = re.compile(r"^T(\d{2}):(\d{2})Z$")
ORDERS = ("first", "second", "third", "fourth", "last")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


def parse_utc(text: object) -> datetime:
    """Parse an RFC 3339 time (``Z`` or an offset, optional fraction) into aware UTC."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError("not an RFC 3339 date-time")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("the time has no UTC offset")
    return moment.astimezone(timezone.utc)


def parse_tz(text: object) -> timedelta:
    """Parse a meter timezone offset ``+HH:MM`` (-11:00..+14:00, quarter hours)."""
    match = _TZ.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError("expected an offset like +01:00")
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3))
    if minutes not in (0, 15, 30, 45) or not -11 <= sign * hours <= 14:
        raise ValueError("offset out of range -11:00..+14:00 or not on a quarter hour")
    return sign * timedelta(hours=hours, minutes=minutes)


def check_transition(rule: object) -> None:
    """Validate a DST transition ``{"order", "day", "month", "hour"}``; raise ValueError."""
    if not isinstance(rule, Mapping):
        raise ValueError("expected an object with order, day, month and hour")
    if rule.get("order") not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}")
    if rule.get("day") not in DAYS:
        raise ValueError("day must be a weekday name in lower case")
    if rule.get("month") not in MONTHS:
        raise ValueError("month must be a month name in lower case")
    hour = rule.get("hour")
    match = _HOUR.match(hour) if isinstance(hour, str) else None
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError("hour must look like T01:00Z")


def transition_moment(rule: object, year: int) -> datetime:
    """The UTC moment a DST transition rule (checked by ``check_rule``) names in ``year``."""
    if not isinstance(rule, Mapping):
        raise ValueError("a DST transition rule is an object")
    month = MONTHS.index(rule["month"]) + 1
    weekday = DAYS.index(rule["day"])
    days = [
        day
        for day in range(1, calendar.monthrange(year, month)[1] + 1)
        if calendar.weekday(year, month, day) == weekday
    ]
    order = rule["order"]
    day = days[-1] if order == "last" else days[ORDERS.index(order)]
    match = _HOUR.match(rule["hour"])
    assert match is not None
    return datetime(year, month, day, int(match.group(1)), int(match.group(2)), tzinfo=timezone.utc)


def dst_offset(moment_utc: datetime, dst: Mapping[str, object]) -> timedelta:
    """The daylight saving shift in force at ``moment_utc`` under the rule ``dst``."""
    if not dst.get("activated"):
        return timedelta(0)
    start = transition_moment(dst["start"], moment_utc.year)
    end = transition_moment(dst["end"], moment_utc.year)
    # Southern-hemisphere rules start late in the year and end early in the next.
    inside = start <= moment_utc < end if start < end else moment_utc >= start or moment_utc < end
    offset = dst.get("offset", 60)
    minutes = offset if isinstance(offset, int | float | str) else 60
    return timedelta(minutes=int(minutes)) if inside else timedelta(0)


def local_time(moment_utc: datetime, tz_offset: timedelta, dst: Mapping[str, object]) -> datetime:
    """``moment_utc`` on the meter's local clock, as an aware datetime with fixed offset."""
    offset = tz_offset + dst_offset(moment_utc, dst)
    return moment_utc.astimezone(timezone(offset))


def iso_seconds(moment: datetime) -> str:
    """ISO 8601 with seconds and offset, as ``status.time`` and ``livemeasure.timestamp``."""
    return moment.replace(microsecond=0).isoformat()


def ocmf_time(moment: datetime, synced: bool) -> str:
    """OCMF ``TM``: ``2025-10-26T12:50:00,000+0100 R`` (``U`` when time sync is invalid)."""
    millis = moment.microsecond // 1000
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + f",{millis:03d}" + moment.strftime("%z")
    return f"{stamp} {'R' if synced else 'U'}"
