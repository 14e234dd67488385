"""Commands arriving at start-up wait, bounded and logged, for the meter to be set up."""

from __future__ import annotations

import logging
import threading

import pytest

from lem_dcbm.clock import ManualClock, SystemClock
from lem_dcbm.startup_gate import Admitted, StartupGate


def test_an_open_gate_lets_a_command_through_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    gate: StartupGate[str] = StartupGate(clock, wait_s=60.0)
    gate.open("controller")
    with caplog.at_level(logging.INFO):
        admitted = gate.admit("stop_transaction of 'tx-1'")
    assert admitted == Admitted("controller", clock.monotonic())
    assert caplog.records == []


def test_a_command_waits_until_the_meter_is_set_up(caplog: pytest.LogCaptureFixture) -> None:
    gate: StartupGate[str] = StartupGate(SystemClock(), wait_s=30.0)
    answers: list[Admitted[str] | str] = []
    with caplog.at_level(logging.INFO, logger="lem_dcbm.startup_gate"):
        waiting = threading.Thread(target=lambda: answers.append(gate.admit("stop of 'tx-1'")))
        waiting.start()
        # Opened once the command logged that it waits: no fixed sleep.
        for _ in range(3000):
            if any("waiting up to 30 s" in r.getMessage() for r in caplog.records):
                break
            threading.Event().wait(0.01)
        gate.open("controller")
        waiting.join(timeout=10)
    [answer] = answers
    assert isinstance(answer, Admitted)
    assert answer.target == "controller"
    messages = [r.getMessage() for r in caplog.records]
    assert any("stop of 'tx-1' arrived while the module is starting" in m for m in messages)
    assert any("carrying out stop of 'tx-1'" in m for m in messages)


def test_a_command_that_cannot_be_carried_out_in_time_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    gate: StartupGate[str] = StartupGate(clock, wait_s=45.0)
    before = clock.monotonic()
    with caplog.at_level(logging.ERROR, logger="lem_dcbm.startup_gate"):
        answer = gate.admit("start_transaction of 'tx-2'")
    assert isinstance(answer, str)
    assert "not set up within 45 s" in answer
    assert clock.monotonic() - before == pytest.approx(45.0)
    assert [r.getMessage() for r in caplog.records] == [answer]


def test_shutdown_refuses_waiting_and_new_commands() -> None:
    clock = ManualClock()
    gate: StartupGate[str] = StartupGate(clock, wait_s=45.0)
    gate.close()
    answer = gate.admit("stop_transaction of 'tx-3'")
    assert isinstance(answer, str)
    assert "shutting down" in answer
    assert clock.monotonic() == 1000.0
