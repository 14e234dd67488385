"""Fuzzing both doors with a fixed seed: command payloads from MQTT, answers from the meter.

Invariants: nothing raises out of the dispatcher or the meter client; every routable
request gets exactly one answer in the EVerest envelope whose retval (if any) fits the
interface; retained command messages are never executed; a meter answer either parses
into a model or becomes a MeterError.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lem_dcbm.errors import MeterError
from lem_dcbm.meter.client import MeterClient
from tests.support.fuzz import (
    ANY_PAYLOADS,
    COMMANDS,
    CannedTransport,
    CommandTarget,
    check_answer,
    every_client_call,
    meter_answers,
    routable_calls,
)


class FormatAndDrop(logging.Filter):
    """Formats every record (a hostile payload must not break a log line), keeps none."""

    def filter(self, record: logging.LogRecord) -> bool:
        logging.Formatter().format(record)
        return False


@pytest.fixture(autouse=True, scope="module")
def module_logs_formatted_not_captured() -> Iterator[None]:
    # Thousands of refused payloads would make each report hundreds of kB of captured log,
    # and a lone surrogate in it cannot cross to the xdist controller (UTF-8 only). A
    # logger's filter sees what is logged on that logger: every one of the package's.
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "lem_dcbm" or name.startswith("lem_dcbm.")
    ]
    dropper = FormatAndDrop()
    for logger in loggers:
        logger.addFilter(dropper)
    yield
    for logger in loggers:
        logger.removeFilter(dropper)


CI = settings(
    max_examples=2000,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@CI
@given(call=routable_calls())
def test_every_routable_call_gets_exactly_one_valid_answer(
    call: tuple[str, bytes, str, str],
) -> None:
    command, payload, call_id, _origin = call
    answers = CommandTarget().feed(command, payload)
    assert len(answers) == 1, answers
    problem = check_answer(command, answers[0], call_id)
    assert problem is None, problem


@CI
@given(command=st.sampled_from(COMMANDS), payload=ANY_PAYLOADS)
def test_random_payloads_never_raise_and_get_at_most_one_answer(
    command: str, payload: bytes
) -> None:
    target = CommandTarget()
    answers = target.feed(command, payload)
    assert len(answers) <= 1
    for answer in answers:
        answer.decode("utf-8")  # whatever it says, it is valid UTF-8
    assert target.handled == [] or len(answers) == 1


@CI
@given(call=routable_calls())
def test_retained_commands_are_never_executed(call: tuple[str, bytes, str, str]) -> None:
    command, payload, _call_id, _origin = call
    target = CommandTarget()
    assert target.feed(command, payload, retain=True) == []
    assert target.handled == []


@CI
@given(answer=meter_answers(), api=st.sampled_from(["v1", "v2"]))
def test_meter_answers_parse_or_are_meter_errors(answer: tuple[int, str], api: str) -> None:
    status, body = answer
    client = MeterClient(CannedTransport(status, body), api_version=api)
    outcomes = every_client_call(client)  # raises if anything but a MeterError escapes
    assert len(outcomes) == 10
    if not 200 <= status < 300:
        assert all(isinstance(o, MeterError) or o is False for o in outcomes)
