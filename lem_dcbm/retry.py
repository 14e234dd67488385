"""One retry policy for every place that tries again: a small value object.

A ``RetryPolicy`` says how many attempts, how long to wait between them (doubling from
``first_delay_s`` up to ``max_delay_s``, optionally jittered), which failures are worth
another attempt, and whether the call may be repeated at all: a request that is not
idempotent (``POST /legal`` starts a transaction) is never re-sent blindly; its caller
settles a lost answer by asking the meter instead. A retry sequence logs one line when
the first attempt fails and one when it ends, never one per attempt.

The sleep (and, for deadlines, the monotonic clock) is injected: tests decide how time
passes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lem_dcbm.errors import MeterBodyError, MeterConnectionError, MeterStatusError

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


def answer_lost(error: BaseException) -> bool:
    """True when a meter request may have been carried out although no usable answer came.

    No answer at all, a 5xx (the meter's web server failed, not the meter's logic), a
    success status other than the promised one, or a body that cannot be read: in each
    case the meter may have acted. A 4xx is the meter's considered refusal.
    """
    if isinstance(error, MeterConnectionError | MeterBodyError):
        return True
    return isinstance(error, MeterStatusError) and not 400 <= error.status < 500


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How to try again: attempts, delays, what is retryable, whether repeating is safe."""

    #: Attempts in all, the first included; None tries until the deadline (or for ever).
    attempts: int | None = 3
    first_delay_s: float = 0.25
    max_delay_s: float = 0.25
    #: Each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
    jitter: float = 0.0
    #: Which failures are worth another attempt.
    retryable: Callable[[BaseException], bool] = answer_lost
    #: False for requests that must never be sent twice (the caller settles instead).
    idempotent: bool = True

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError("delays must satisfy 0 <= first_delay_s <= max_delay_s")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    @classmethod
    def constant(
        cls,
        retries: int,
        delay_s: float,
        *,
        retryable: Callable[[BaseException], bool] = answer_lost,
        idempotent: bool = True,
    ) -> RetryPolicy:
        """``retries`` more attempts after the first, ``delay_s`` apart (the config's shape)."""
        return cls(
            attempts=retries + 1,
            first_delay_s=delay_s,
            max_delay_s=delay_s,
            retryable=retryable,
            idempotent=idempotent,
        )

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The pause before retry number ``retry`` (0 for the first retry)."""
        base = min(self.max_delay_s, self.first_delay_s * (2.0 ** min(retry, 30)))
        if not self.jitter:
            return base
        return min(self.max_delay_s, base * (1.0 - self.jitter + 2.0 * self.jitter * rand()))

    def may_retry(self, error: BaseException, attempt: int) -> bool:
        """True when ``error`` after attempt number ``attempt`` (1-based) is worth another."""
        if not self.idempotent or not self.retryable(error):
            return False
        return self.attempts is None or attempt < self.attempts

    def run(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        sleep: Callable[[float], object] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        deadline: float | None = None,
        before_retry: Callable[[BaseException], None] | None = None,
        quiet: bool = False,
        policy_for: Callable[[BaseException], RetryPolicy] | None = None,
    ) -> T:
        """Call ``fn`` until it succeeds or the policy (or ``deadline``) says stop.

        The last error is re-raised unchanged. ``deadline`` is on ``monotonic``'s clock: no
        retry starts whose pause would end after it. A ``sleep`` that returns True was
        interrupted (``Event.wait``, ``Clock.wait``): the last error is re-raised then.
        ``before_retry`` runs before each further attempt (e.g. to drop stale connections).
        ``quiet`` logs the sequence at DEBUG only: for a caller whose previous sequence
        failed the same way and was logged, or that says itself what failed.
        ``policy_for`` picks the policy that judges and paces a failure, when failures of
        different kinds back off differently; each policy's pauses count its own retries.
        """
        info, warning = (_LOGGER.debug, _LOGGER.debug) if quiet else (_LOGGER.info, _LOGGER.warning)
        attempt = 1
        first_error: BaseException | None = None
        retries: dict[int, int] = {}
        while True:
            try:
                result = fn()
            except Exception as exc:
                policy = self if policy_for is None else policy_for(exc)
                retry = retries.get(id(policy), 0)
                pause = policy.delay(retry)
                late = deadline is not None and monotonic() + pause > deadline
                if late or not policy.may_retry(exc, attempt):
                    if first_error is not None:
                        warning("%s: gave up after %d attempts: %s", what, attempt, exc)
                    raise
                if first_error is None:
                    first_error = exc
                    info("%s failed, trying again: %s", what, exc)
                retries[id(policy)] = retry + 1
                if sleep(pause) is True:
                    raise
                if before_retry is not None:
                    before_retry(exc)
                attempt += 1
                continue
            if first_error is not None:
                info("%s succeeded at attempt %d", what, attempt)
            return result
