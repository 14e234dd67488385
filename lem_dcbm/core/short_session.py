"""Stops that arrive within the meter's minimum transaction duration (pure timing logic).

The meter refuses to stop a transaction in its first 2 minutes. EvseManager ignores the
``transaction_min_stop_time`` of the start's answer and calls ``stop_transaction`` when
the car leaves, holding its state machine lock; its other threads give up on that lock
after 120 s and throw (``scoped_lock_timeout``). So a stop inside the minimum waits at
the meter until the minimum has passed and then stops, as long as the whole stop still
answers well within those 120 s; a stop that would have to wait longer is answered at
once and the transaction is stopped in the background as soon as the meter allows it,
its record going out on the late-record road.

How long the transaction has run is taken, in this order, from the meter itself
(``meterValue.transactionDuration`` of ``GET /legal`` while it runs), from the monotonic
time this process saw the start confirmed, and from the journal's ``started_at`` (the
host clock, the least trusted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

#: A stop answers within this time of its arrival: EvseManager's deadlock detector gives
#: up after 120 s, and the answer still has to cross MQTT and EvseManager's own work.
STOP_ANSWER_LIMIT_S = 110.0
#: Time kept after a minimum-duration wait for the stop request and the record fetch.
STOP_RESERVE_S = 5.0
#: Added to the computed wait: the meter counts whole seconds from its own start, which
#: lies a request before ours.
WAIT_MARGIN_S = 1.0
#: Pause between two stops the meter refused because the minimum had not passed yet.
REFUSED_PAUSE_S = 1.0
#: After the wait, how long a refusal is still taken for "not quite yet" (the estimate of
#: the elapsed time may be a little off); then the stop moves to the background.
REFUSED_WINDOW_S = 4.0


@dataclass(frozen=True, slots=True)
class MinimumWait:
    """What a stop does about the meter's minimum duration."""

    #: Seconds to wait before the stop is sent (0: send it now).
    wait_s: float = 0.0
    #: The wait is longer than allowed: answer now, stop in the background later.
    deferred: bool = False
    #: How long the transaction has run, when known.
    elapsed_s: float | None = None


def plan_wait(
    elapsed_s: float | None, *, minimum_s: float, allowed_s: float, spent_s: float = 0.0
) -> MinimumWait:
    """How a stop arriving ``elapsed_s`` into its transaction waits for the minimum.

    ``allowed_s`` is the configured longest wait; ``spent_s`` what the command already
    spent since it arrived (a start-up wait, the meter's answers). The wait must also leave
    ``STOP_RESERVE_S`` within ``STOP_ANSWER_LIMIT_S``. Unknown ``elapsed_s``: no wait (the
    meter's answer decides).
    """
    if elapsed_s is None or elapsed_s >= minimum_s:
        return MinimumWait(elapsed_s=elapsed_s)
    wait = minimum_s - elapsed_s + WAIT_MARGIN_S
    budget = min(allowed_s, STOP_ANSWER_LIMIT_S - STOP_RESERVE_S - spent_s)
    return MinimumWait(wait_s=wait, deferred=wait > budget, elapsed_s=elapsed_s)


def answer_deadline(arrival: float, waited_until: float, record_wait_s: float) -> float:
    """When a stop that waited for the minimum must answer (monotonic)."""
    return min(waited_until + record_wait_s, arrival + STOP_ANSWER_LIMIT_S)


def meter_elapsed_s(legal: Mapping[str, object]) -> float | None:
    """``meterValue.transactionDuration`` of a running transaction, in seconds, if sent."""
    meter_value = legal.get("meterValue")
    if not isinstance(meter_value, Mapping):
        return None
    value = meter_value.get("transactionDuration")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def wall_elapsed_s(started_at: str | None, now: datetime) -> float | None:
    """Seconds since the journal's ``started_at`` (RFC 3339), None when unreadable or ahead."""
    if not started_at:
        return None
    try:
        start = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if start.tzinfo is None:
        return None
    elapsed = (now - start).total_seconds()
    return elapsed if elapsed >= 0 else None
