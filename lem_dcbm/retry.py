"""Calling the meter again after a failure, as the resilience settings say.

Only the errors in ``retry_on`` are retried (by default: no answer from the meter); an
unexpected status or body is the meter's considered answer and is raised at once. The
sleep is injected so tests and the service's clock decide how time passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from lem_dcbm.errors import MeterConnectionError

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


def call_with_retry(
    fn: Callable[[], T],
    *,
    retries: int,
    delay_s: float,
    sleep: Callable[[float], None] = time.sleep,
    retry_on: tuple[type[BaseException], ...] = (MeterConnectionError,),
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call ``fn`` up to ``1 + retries`` times, sleeping ``delay_s`` between attempts.

    ``on_retry(attempt, error)`` is told about each failed attempt (1-based) that will be
    followed by another; the last error is re-raised unchanged.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if delay_s < 0:
        raise ValueError(f"delay_s must be >= 0, got {delay_s}")
    attempt = 1
    while True:
        try:
            return fn()
        except retry_on as exc:
            if attempt > retries:
                raise
            _LOGGER.debug("attempt %d of %d failed: %s", attempt, retries + 1, exc)
            if on_retry is not None:
                on_retry(attempt, exc)
            sleep(delay_s)
            attempt += 1
