"""RetryPolicy: attempts, delays, what is retried, idempotency, deadlines and the log."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from lem_dcbm.errors import MeterBodyError, MeterConnectionError, MeterStatusError
from lem_dcbm.retry import RetryPolicy, answer_lost

REFUSED = MeterConnectionError("GET", "/v1/status", "connection refused")


def failing(errors: list[BaseException], result: str = "ok") -> Callable[[], str]:
    """A call that raises each of ``errors`` in turn, then returns ``result``."""
    queue = list(errors)

    def call() -> str:
        if queue:
            raise queue.pop(0)
        return result

    return call


def test_succeeds_after_retries_with_the_configured_pauses() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy.constant(3, 0.5)
    assert policy.run(failing([REFUSED, REFUSED]), what="x", sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 0.5]


def test_gives_up_after_the_attempts_and_reraises_the_last_error() -> None:
    sleeps: list[float] = []
    last = MeterConnectionError("GET", "/v1/status", "timed out")
    with pytest.raises(MeterConnectionError) as raised:
        RetryPolicy.constant(1, 0.5).run(failing([REFUSED, last]), what="x", sleep=sleeps.append)
    assert raised.value is last
    assert sleeps == [0.5]


def test_delays_double_up_to_the_maximum() -> None:
    policy = RetryPolicy(attempts=None, first_delay_s=0.25, max_delay_s=2.0)
    assert [policy.delay(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(attempts=None, first_delay_s=1.0, max_delay_s=4.0, jitter=0.25)
    assert policy.delay(0, rand=lambda: 0.0) == 0.75
    assert policy.delay(0, rand=lambda: 1.0) == 1.25
    assert policy.delay(5, rand=lambda: 1.0) == 4.0


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (REFUSED, True),
        (MeterStatusError("GET", "/v1/ocmf", 503, "busy"), True),
        (MeterBodyError("GET", "/v1/status", "not JSON", "<html>"), True),
        (MeterStatusError("GET", "/v1/ocmf", 404, "not found"), False),
        (MeterStatusError("POST", "/v1/legal", 409, "running"), False),
        (ValueError("bug"), False),
    ],
)
def test_answer_lost_tells_failures_the_meter_may_have_acted_on(
    error: BaseException, lost: bool
) -> None:
    assert answer_lost(error) is lost


def test_a_considered_answer_is_not_retried() -> None:
    refused = MeterStatusError("POST", "/v1/legal", 409, "running")
    with pytest.raises(MeterStatusError):
        RetryPolicy.constant(3, 0.1).run(failing([refused]), what="x", sleep=lambda s: None)


def test_a_request_that_is_not_idempotent_is_never_repeated() -> None:
    calls: list[int] = []

    def post() -> str:
        calls.append(1)
        raise REFUSED

    policy = RetryPolicy.constant(5, 0.1, idempotent=False)
    with pytest.raises(MeterConnectionError):
        policy.run(post, what="POST", sleep=lambda s: None)
    assert calls == [1]


def test_no_retry_starts_past_the_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(attempts=None, first_delay_s=1.0, max_delay_s=1.0)
    with pytest.raises(MeterConnectionError):
        policy.run(
            failing([REFUSED] * 100), what="x", sleep=sleep, monotonic=lambda: now[0], deadline=3.5
        )
    assert now[0] == 3.0


def test_before_retry_runs_between_attempts() -> None:
    seen: list[BaseException] = []
    RetryPolicy.constant(2, 0.0).run(
        failing([REFUSED]), what="x", sleep=lambda s: None, before_retry=seen.append
    )
    assert seen == [REFUSED]


def test_a_retry_sequence_logs_one_line_at_start_and_one_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lem_dcbm.retry")
    RetryPolicy.constant(5, 0.0).run(
        failing([REFUSED] * 4), what="read the status", sleep=lambda s: None
    )
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "read the status failed, trying again",
        "read the status succeeded at attempt 5",
    ]


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(first_delay_s=2.0, max_delay_s=1.0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.0)
