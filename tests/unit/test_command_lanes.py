"""What waits behind slow work: refusals never do, meter commands stay in order, and a
command waits for at most the one background step in progress.

The real controller drives the simulated meter behind a transport whose requests are
held by a gate, so a start (or a record fetch) is "at the meter" for as long as the test
says. The test thread plays the bus's dispatch thread (``submit``); the dispatcher's
worker is real.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.everest import envelope, results
from lem_dcbm.everest.bus import Message
from lem_dcbm.everest.commands import CommandDispatcher
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.everest.topics import Topics
from lem_dcbm.harness import wait_until
from tests.support.faulty_transport import Rule
from tests.support.record_rig import Rig, request

TOPICS = Topics("everest/", "pm")


class Answers:
    """What the dispatcher published, by call id, in order."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.by_id: dict[str, dict[str, Any]] = {}

    def __call__(self, topic: str, payload: bytes) -> None:
        data = json.loads(payload)["data"]["data"]
        self.order.append(data["id"])
        self.by_id[data["id"]] = data


@pytest.fixture
def lanes(tmp_path: Path) -> Any:
    rig = Rig(tmp_path)
    answers = Answers()
    commands = CommandDispatcher(TOPICS, answers)
    controller = rig.controller
    commands.register(
        "start_transaction",
        lambda args: results.start_response(
            controller.start_transaction(transaction_request(args["value"]))
        ),
    )
    commands.register(
        "stop_transaction",
        lambda args: results.stop_response(controller.stop_transaction(args["transaction_id"])),
    )
    commands.start()
    gate = rig.transport.add(Rule("POST", "/v1/legal", "gate", count=1))
    yield rig, commands, answers, gate
    gate.release.set()
    commands.stop(5)


def send(commands: CommandDispatcher, name: str, call_id: str, args: Any) -> None:
    payload = envelope.cmd_payload(call_id, args, "evse")
    commands.submit(Message(TOPICS.cmd(name), payload))


def test_a_refused_call_is_answered_while_a_start_waits_at_the_meter(lanes: Any) -> None:
    rig, commands, answers, gate = lanes
    send(commands, "start_transaction", "start-1", {"value": request("tx-1")})
    assert gate.entered.wait(5), "the start never reached the meter"
    # Against the schema, nested too deep, a start without its argument: none needs the meter.
    send(commands, "stop_transaction", "bad-1", {"transaction_id": 17})
    deep = '{"msg_type":"Cmd","data":{"id":"bad-2","origin":"evse","args":' + "[" * 900
    commands.submit(Message(TOPICS.cmd("stop_transaction"), (deep + "]" * 900 + "}}").encode()))
    send(commands, "start_transaction", "bad-3", {})
    # Answered on the submitting thread, while the start is still held at the meter.
    assert answers.order == ["bad-1", "bad-2", "bad-3"]
    assert commands.running
    assert rig.ids_at_meter() == []
    kinds = [answers.by_id[f"bad-{n}"]["error"]["__everest__error_type"] for n in (1, 2, 3)]
    assert kinds == ["SchemaValidationError", "MessageParsingError", "SchemaValidationError"]
    gate.release.set()
    wait_until(lambda: "start-1" in answers.by_id, 10, what="the start's answer")
    assert answers.by_id["start-1"]["retval"]["status"] == "OK"
    assert rig.ids_at_meter() == ["tx-1"]


def test_a_stop_sent_during_its_start_is_carried_out_after_it(lanes: Any) -> None:
    rig, commands, answers, gate = lanes
    send(commands, "start_transaction", "start-1", {"value": request("tx-1")})
    assert gate.entered.wait(5), "the start never reached the meter"
    send(commands, "stop_transaction", "stop-1", {"transaction_id": "tx-1"})
    assert commands.waiting == 1  # valid: it waits for the meter, behind the start
    assert answers.order == []
    gate.release.set()
    wait_until(lambda: len(answers.order) == 2, 10, what="both answers")
    assert answers.order == ["start-1", "stop-1"]
    assert answers.by_id["start-1"]["retval"]["status"] == "OK"
    stop = answers.by_id["stop-1"]["retval"]
    assert stop["status"] == "OK", stop
    assert stop["signed_meter_value"]["signed_meter_data"] == rig.record_at_meter("tx-1")
    assert rig.device.state()["running_transaction"] is None


def test_a_command_waits_for_one_background_step_not_for_all_of_them(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    for transaction_id in ("tx-1", "tx-2"):  # two records left to fetch in the background
        assert rig.controller.start_transaction(transaction_request(request(transaction_id))).ok
        rig.charge()
        lost = rig.transport.add(Rule("GET", "/v1/ocmf", "reset"))
        assert not rig.controller.stop_transaction(transaction_id).ok
        rig.transport.rules.remove(lost)
    assert rig.controller.pending_records == ["tx-1", "tx-2"]
    rig.clock.advance(600)
    gate = rig.transport.add(Rule("GET", "/v1/ocmf", "gate", count=1))
    background = threading.Thread(target=rig.controller.housekeeping)
    background.start()
    assert gate.entered.wait(5), "the first record fetch never reached the meter"
    answers: list[Any] = []
    command = threading.Thread(
        target=lambda: answers.append(
            rig.controller.start_transaction(transaction_request(request("tx-3")))
        )
    )
    command.start()
    wait_until(lambda: rig.controller.commands_waiting == 1, 5, what="the start to wait")
    calls_before = len(rig.transport.calls)
    gate.release.set()
    command.join(10)
    background.join(10)
    assert answers[0].ok, answers
    after = rig.transport.calls[calls_before:]
    # The start came right after the fetch in progress, before tx-2's record was asked for.
    start_at = after.index(("POST", "/v1/legal"))
    assert not any(path.startswith("/v1/ocmf?transactionId=tx-2") for _, path in after[:start_at])
    assert rig.controller.pending_records == ["tx-2"]
