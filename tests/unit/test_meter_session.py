"""The controller's session with the meter: lost answers settled by asking the meter."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.meter_session import MeterSession
from lem_dcbm.errors import ControllerError, MeterConnectionError, MeterError, MeterStatusError
from lem_dcbm.retry import RetryPolicy
from tests.support.fake_meter import FakeMeter

BODY = {"transactionId": "tx-1", "evseId": "DE*ABC*E1", "clientId": ",tx-1", "cableId": 0}


def lost(name: str) -> MeterConnectionError:
    return MeterConnectionError("POST", f"/v1/{name}", "read timed out")


def refused(method: str = "PUT") -> MeterStatusError:
    return MeterStatusError(method, "/v1/legal", 400, '{"error": "too early"}')


def new_session(meter: FakeMeter, clock: ManualClock | None = None) -> MeterSession:
    clock = clock or ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    return MeterSession(
        meter,
        clock,
        RetryPolicy.constant(2, 0.25),
        sleep=clock.sleep,
        started=lambda: None,
    )


def runs_then_lost(meter: FakeMeter, transaction_id: str) -> Callable[[], None]:
    """A failure injected into a start: the meter runs ``transaction_id``, the answer is lost."""

    def fail() -> None:
        meter.running_id = transaction_id
        raise lost("legal")

    return fail


def test_a_start_whose_answer_was_lost_but_that_runs_is_not_sent_again() -> None:
    meter = FakeMeter()
    meter.fail["start_transaction"] = [runs_then_lost(meter, "tx-1")]
    new_session(meter).start(BODY, "tx-1")
    assert meter.calls.count("start_transaction") == 1
    assert meter.running_id == "tx-1"


def test_a_start_not_carried_out_is_sent_again() -> None:
    meter = FakeMeter()
    meter.fail["start_transaction"] = [lost("legal")]
    new_session(meter).start(BODY, "tx-1")
    assert meter.calls.count("start_transaction") == 2
    assert meter.running_id == "tx-1"


def test_a_start_is_never_sent_again_when_the_meter_cannot_say_what_runs() -> None:
    meter = FakeMeter(no_get_legal=True)
    meter.fail["start_transaction"] = [runs_then_lost(meter, "tx-1")]
    with pytest.raises(ControllerError, match="not sent again"):
        new_session(meter).start(BODY, "tx-1")
    assert meter.calls.count("start_transaction") == 1


def test_a_lost_start_that_another_transaction_took_is_refused() -> None:
    meter = FakeMeter()
    meter.fail["start_transaction"] = [runs_then_lost(meter, "other")]
    with pytest.raises(MeterError, match="now runs transaction other instead"):
        new_session(meter).start(BODY, "tx-1")


def test_a_stop_whose_answer_was_lost_is_settled_by_asking() -> None:
    meter = FakeMeter(running_id="tx-1")

    def stopped_then_lost() -> None:
        meter.running_id = None
        meter.ended.add("tx-1")
        raise lost("legal")

    meter.fail["stop_transaction"] = [stopped_then_lost]
    assert new_session(meter).stop("tx-1", deadline=None) is None
    assert meter.calls.count("stop_transaction") == 1


def test_a_stop_still_running_after_a_lost_answer_is_sent_again() -> None:
    meter = FakeMeter(running_id="tx-1")
    meter.fail["stop_transaction"] = [lost("legal")]
    assert new_session(meter).stop("tx-1", deadline=None) == 17
    assert meter.calls.count("stop_transaction") == 2


def test_a_refused_stop_is_sent_again_only_within_its_window() -> None:
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    meter = FakeMeter(running_id="tx-1")
    meter.fail["stop_transaction"] = [refused(), refused()]
    session = new_session(meter, clock)
    window = clock.monotonic() + 5.0
    assert session.stop("tx-1", deadline=None, refused_until=window) == 17
    assert meter.calls.count("stop_transaction") == 3
    # Without a window a refusal is the answer: the controller decides what follows.
    meter = FakeMeter(running_id="tx-1")
    meter.fail["stop_transaction"] = [refused()]
    with pytest.raises(MeterStatusError):
        new_session(meter).stop("tx-1", deadline=None)
    assert meter.calls.count("stop_transaction") == 1


def test_a_lost_stop_is_a_controller_error_when_the_meter_cannot_say_which_runs() -> None:
    meter = FakeMeter(running_id="tx-1", no_get_legal=True)
    meter.fail["stop_transaction"] = [lost("legal")] * 3
    with pytest.raises(ControllerError, match="no GET /legal"):
        new_session(meter).stop("tx-1", deadline=None)
    assert meter.calls.count("stop_transaction") == 3
