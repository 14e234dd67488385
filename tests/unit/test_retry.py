"""call_with_retry: attempts, delays, which errors are retried, and what is re-raised."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lem_dcbm.errors import MeterBodyError, MeterConnectionError, MeterTlsError
from lem_dcbm.retry import call_with_retry


def failing(errors: list[BaseException], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A function raising ``errors`` in order, then returning ``result``; counts calls."""
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


def down(n: int) -> MeterConnectionError:
    return MeterConnectionError("GET", "/v1/status", f"refused #{n}")


def test_success_on_first_attempt_does_not_sleep() -> None:
    sleeps: list[float] = []
    fn, calls = failing([])
    assert call_with_retry(fn, retries=3, delay_s=1.0, sleep=sleeps.append) == "ok"
    assert (len(calls), sleeps) == (1, [])


def test_retries_until_success_sleeping_between_attempts() -> None:
    sleeps: list[float] = []
    seen: list[tuple[int, str]] = []
    fn, calls = failing([down(1), down(2)])

    result = call_with_retry(
        fn,
        retries=3,
        delay_s=0.25,
        sleep=sleeps.append,
        on_retry=lambda attempt, exc: seen.append((attempt, str(exc))),
    )

    assert result == "ok"
    assert len(calls) == 3
    assert sleeps == [0.25, 0.25]
    assert seen == [(1, "GET /v1/status: refused #1"), (2, "GET /v1/status: refused #2")]


def test_zero_retries_means_one_attempt() -> None:
    sleeps: list[float] = []
    first = down(1)
    fn, calls = failing([first, down(2)])
    with pytest.raises(MeterConnectionError) as caught:
        call_with_retry(fn, retries=0, delay_s=1.0, sleep=sleeps.append)
    assert caught.value is first
    assert (len(calls), sleeps) == (1, [])


def test_the_last_error_is_reraised_after_all_attempts() -> None:
    sleeps: list[float] = []
    errors: list[BaseException] = [down(1), down(2), down(3), down(4)]
    last = errors[2]
    fn, calls = failing(errors)
    with pytest.raises(MeterConnectionError) as caught:
        call_with_retry(fn, retries=2, delay_s=0.5, sleep=sleeps.append)
    assert caught.value is last
    assert (len(calls), sleeps) == (3, [0.5, 0.5])


def test_subclasses_of_retry_on_are_retried() -> None:
    fn, calls = failing([MeterTlsError("GET", "/v1/status", "handshake")])
    assert call_with_retry(fn, retries=1, delay_s=0, sleep=lambda s: None) == "ok"
    assert len(calls) == 2


def test_errors_outside_retry_on_are_raised_at_once() -> None:
    sleeps: list[float] = []
    bad_body = MeterBodyError("GET", "/v1/status", "not JSON", "<html>")
    fn, calls = failing([bad_body])
    with pytest.raises(MeterBodyError):
        call_with_retry(fn, retries=5, delay_s=1.0, sleep=sleeps.append)
    assert (len(calls), sleeps) == (1, [])


def test_retry_on_can_be_widened() -> None:
    fn, calls = failing([MeterBodyError("GET", "/v1/status", "x", ""), KeyError("k")])
    result = call_with_retry(
        fn, retries=2, delay_s=0, sleep=lambda s: None, retry_on=(MeterBodyError, KeyError)
    )
    assert result == "ok"
    assert len(calls) == 3


@pytest.mark.parametrize(("retries", "delay_s"), [(-1, 0.0), (0, -0.1)])
def test_negative_settings_are_refused(retries: int, delay_s: float) -> None:
    fn, calls = failing([])
    with pytest.raises(ValueError, match="must be >= 0"):
        call_with_retry(fn, retries=retries, delay_s=delay_s, sleep=lambda s: None)
    assert calls == []
