"""Hostile meter answers over real sockets, fuzzed with a fixed seed.

The real client (urllib3, one keep-alive connection) talks to ``HostileMeter``, which
answers each request with the simulated meter's own answer or with what a broken meter
or network sends: any status and body, a body shorter than its ``Content-Length``, an
answer dribbled out slower than any timeout allows, a reset, unparsable headers.

Invariants:

- nothing but a ``MeterError`` leaves the client, and the controller's commands and the
  ready loop raise nothing at all;
- every request ends within its bound (twice the timeout: one re-send on a fresh
  connection is allowed), however slowly the answer drips;
- an answer that is not a complete, well-formed HTTP answer never becomes a result;
- ``CommunicationFault`` is raised exactly while the last reading failed, and clear after
  a good one; a status answer that is unusable changes no health error;
- a stop never hands out a record other than its own transaction's, whatever
  ``/ocmf`` answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.health_monitor import HealthMonitor
from lem_dcbm.core.ready_loop import COMMUNICATION_FAULT, LoopTiming, ReadyLoop
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.errors import MeterConnectionError
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner, tamper_record
from tests.support.fake_outputs import RecordingOutputs
from tests.support.fuzz import (
    WIRE_ACTS,
    WIRE_BOUND_S,
    WIRE_CALLS,
    WIRE_TIMEOUT_S,
    WireCall,
    wire_call_problem,
    wire_client,
)
from tests.support.hostile_meter import Act, HostileMeter
from tests.support.record_rig import request

SIGNER = OcmfSigner.generate()
START = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)


def sockets(examples: int) -> settings:
    """A fixed seed, a bounded count, no shrinking (each example costs real time)."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


class Meter:
    """A simulated meter behind a hostile socket, on a manual clock."""

    def __init__(self) -> None:
        self.clock = ManualClock(START)
        self.device = SimulatedMeter(self.clock, SIGNER, MeterConfig(min_transaction_seconds=0))
        self.server = HostileMeter(self.device)

    def client(self) -> MeterClient:
        return wire_client(self.server)

    def controller(
        self, client: MeterClient, measurements: MeterClient | None = None, **settings: Any
    ) -> MeterController:
        """A controller on this meter's clock, without a journal."""
        return MeterController(
            client,
            ControllerSettings(
                start=StartSettings(tariff_id=0, cable_id=1),
                measurement_timeout_s=WIRE_TIMEOUT_S,
                api_version="v1",
                **settings,
            ),
            self.clock,
            TimeSync(client, self.clock, timezone="+01:00", dst={"activated": False}),
            records=RecordBook(),
            measurements=measurements,
        )


@pytest.fixture(scope="module")
def meter() -> Iterator[Meter]:
    meter = Meter()
    yield meter
    meter.server.close()


# -- the client --------------------------------------------------------------------------


@sockets(50)
@given(endpoint=st.sampled_from(WIRE_CALLS), act=WIRE_ACTS)
def test_every_answer_parses_or_is_a_meter_error_within_the_bound(
    meter: Meter, endpoint: WireCall, act: Act
) -> None:
    assert wire_call_problem(meter.server, endpoint, act) is None


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", "/v1/status", MeterClient.status),
        ("POST", "/v1/legal", lambda c: c.start_transaction({"transactionId": "drip"})),
    ],
)
def test_an_answer_dribbled_within_each_timeout_is_cut_at_the_deadline(
    meter: Meter, method: str, path: str, call: Any
) -> None:
    # Four bytes every 0.1 s: each read is within the 0.5 s timeout, the answer takes
    # seconds. The request ends at its deadline and is not sent again.
    client = meter.client()
    meter.server.plan(method, path, [Act(kind="drip", gap_s=0.1)] * 2)
    served = len(meter.server.served)
    started = time.monotonic()
    try:
        with pytest.raises(MeterConnectionError, match=r"no answer within 0.5 s"):
            call(client)
        took = time.monotonic() - started
        assert meter.server.served[served:] == [(method, path, "drip")]
        meter.server.clear()
        assert client.status().meter_id  # the next request gets a fresh connection
    finally:
        meter.server.clear()
        client.close()
    assert took < WIRE_BOUND_S  # the whole answer would take seconds


# -- CommunicationFault follows reachability -----------------------------------------------


class Unexpected(logging.Handler):
    """Keeps the log records that carry a traceback: something the loop did not expect."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@sockets(20)
@given(acts=st.lists(st.tuples(WIRE_ACTS, WIRE_ACTS), min_size=1, max_size=6))
def test_communication_fault_is_raised_exactly_while_readings_fail(
    meter: Meter, acts: list[tuple[Act, Act]]
) -> None:
    commands, measurements = meter.client(), meter.client()
    controller = meter.controller(commands, measurements=measurements)
    outputs = RecordingOutputs()
    health = HealthMonitor(measurements, outputs, meter.clock, poll_interval_s=1.0)
    # (reading, status) per cycle: one good cycle first, then the acts, then two good ones.
    cycles = [(Act(), Act()), *acts, (Act(), Act()), (Act(), Act())]
    seen: list[bool] = []
    events_after: list[int] = []

    def raised() -> bool:
        state = False
        for kind, payload in outputs.events:
            if payload == (COMMUNICATION_FAULT, ""):
                state = kind == "raise"
        return state

    stop = threading.Event()

    def after_cycle() -> None:
        seen.append(raised())
        events_after.append(len(outputs.events))
        if len(seen) == len(cycles):
            stop.set()
            return
        # A re-send gets the same; what a cycle left unused is dropped.
        meter.server.clear()
        reading, status = cycles[len(seen)]
        meter.server.plan("GET", "/v1/livemeasure", [reading] * 2)
        meter.server.plan("GET", "/v1/status", [status] * 2)

    loop = ReadyLoop(
        controller,
        outputs,
        meter.clock,
        LoopTiming(interval_s=1.0),
        on_cycle=after_cycle,
        health=health,
    )
    unexpected = Unexpected()
    logging.getLogger("lem_dcbm").addHandler(unexpected)
    try:
        started = time.monotonic()
        loop.run(stop)
        took = time.monotonic() - started
    finally:
        logging.getLogger("lem_dcbm").removeHandler(unexpected)
        meter.server.clear()
        commands.close()
        measurements.close()
    assert unexpected.records == [], [r.getMessage() for r in unexpected.records]
    assert took <= 1.0 + 2 * len(cycles) * WIRE_BOUND_S
    for number, ((reading, status), fault) in enumerate(zip(cycles, seen, strict=True)):
        if reading.kind == "meter":
            assert not fault, f"cycle {number}: a good reading left CommunicationFault raised"
        elif not reading.well_formed or reading.status != 200:
            assert fault, f"cycle {number}: {reading.kind} left CommunicationFault clear"
        if number and (not status.well_formed or status.status != 200):
            # An unusable status answer changes no health error.
            emitted = outputs.events[events_after[number - 1] : events_after[number]]
            changed = [e for e in emitted if e[0] in ("raise", "clear")]
            changed = [e for e in changed if e[1][0] != COMMUNICATION_FAULT]
            assert changed == [], f"cycle {number}: {status.kind} status answer changed {changed}"
    assert seen[-1] is False


# -- a stop hands out its own record or none -----------------------------------------------


def acts_with_records(*records: str) -> st.SearchStrategy[list[Act]]:
    """Up to four acts, some of which serve one of ``records`` (whole or tampered)."""
    served = [Act(kind="answer", body=r.encode()) for r in records]
    served += [Act(kind="answer", body=tamper_record(r).encode()) for r in records]
    return st.lists(WIRE_ACTS | st.sampled_from(served), max_size=4)


@sockets(16)
@given(data=st.data())
def test_a_stop_never_bills_a_record_of_another_transaction(
    meter: Meter, data: st.DataObject
) -> None:
    client = meter.client()
    controller = meter.controller(client, stop_record_wait_s=3.0, transaction_retries=2)
    unexpected = Unexpected()
    logging.getLogger("lem_dcbm").addHandler(unexpected)
    try:
        controller.initialize()
        number = len(meter.device.state()["transactions"])
        foreign_id, own_id = f"fuzz-{number}-a", f"fuzz-{number}-b"
        assert controller.start_transaction(transaction_request(request(foreign_id))).ok
        meter.clock.advance(30)
        assert controller.stop_transaction(foreign_id).ok
        foreign = meter.device.ocmf(foreign_id)
        # The start of our own transaction, answered badly...
        meter.server.plan("POST", "/v1/legal", data.draw(st.lists(WIRE_ACTS, max_size=2)))
        meter.server.plan("GET", "/v1/status", data.draw(st.lists(WIRE_ACTS, max_size=2)))
        meter.server.plan("GET", "/v1/ocmf", data.draw(acts_with_records(foreign)))
        started = controller.start_transaction(transaction_request(request(own_id)))
        meter.server.clear()
        running = meter.device.state()["running_transaction"]
        begin = meter.device.ocmf(own_id) if running == own_id else None
        meter.clock.advance(30)
        # ...and its stop.
        meter.server.plan("GET", "/v1/ocmf", data.draw(acts_with_records(foreign)))
        meter.server.plan("PUT", "/v1/legal", data.draw(st.lists(WIRE_ACTS, max_size=2)))
        meter.server.plan("GET", "/v1/legal", data.draw(st.lists(WIRE_ACTS, max_size=2)))
        stopped = controller.stop_transaction(own_id)
        meter.server.clear()
        own = meter.device.ocmf(own_id) if running == own_id else None
        if meter.device.state()["running_transaction"] is not None:
            controller.stop_transaction("")  # the next example starts from a quiet meter
    finally:
        logging.getLogger("lem_dcbm").removeHandler(unexpected)
        meter.server.clear()
        client.close()
    assert unexpected.records == [], [r.getMessage() for r in unexpected.records]
    if started.ok:
        assert running == own_id, "a start answered OK that the meter does not run"
    if started.begin_record is not None:
        assert started.begin_record.ocmf == begin
    if stopped.ok:
        assert stopped.record is not None
        assert stopped.record.ocmf == own
        assert stopped.record.ocmf != foreign
