"""Presence messages are claims anyone on the broker can make: none ends a running module.

Real mosquitto, and the module as a process against the simulator over sockets, where
the bullet is about a running module; the guard alone where it is about a start.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.everest.bus import Message, MqttBus
from lem_dcbm.everest.presence import DuplicateInstance, Instance, InstanceGuard
from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    transaction_request,
    wait_until,
    write_config,
)
from tests.support.everest_peer import EverestPeer

pytestmark = pytest.mark.integration

PRESENCE = f"everest/lem_dcbm/{MODULE_ID}/presence"
ASK = f"everest/lem_dcbm/{MODULE_ID}/ask"
#: The message of the report: from any client, not retained.
FORGED = b'{"instance":"x","pid":1,"host":"h","started":0,"state":"online"}'


class Claimant:
    """Another 'instance' on the broker: publishes a presence and answers every ask."""

    def __init__(self, broker: Broker, instance: Instance, *, base: str) -> None:
        self.instance = instance
        self.presence = f"{base}/presence"
        self._bus = MqttBus(broker.settings, f"claimant-{instance.token}", clean_session=True)
        self._bus.subscribe(f"{base}/ask", self._answer)
        self.asked = 0

    def __enter__(self) -> Claimant:
        self._bus.connect(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._bus.close()

    def announce(self, *, online: bool = True) -> None:
        payload = Instance(
            self.instance.token,
            self.instance.pid,
            self.instance.host,
            self.instance.started,
            online=online,
        ).payload()
        self._bus.publish(self.presence, payload, retain=True)
        self._bus.flush()

    def _answer(self, message: Message) -> None:
        asker = Instance.parse(message.payload)
        if asker is not None and asker.token != self.instance.token:
            self.asked += 1
            self.announce()


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


@pytest.fixture
def module(tmp_path: Path, simulator: Simulator, mosquitto: Broker) -> Iterator[ModuleProcess]:
    config = write_config(tmp_path / "config.yaml", simulator_config(simulator))
    with start_module(tmp_path / "module", config, mosquitto.port) as running:
        running.wait_ready()
        yield running


def _start(peer: EverestPeer, transaction_id: str) -> None:
    peer.wait_for_var("powermeter", 1, timeout=20)
    answer = peer.call("start_transaction", {"value": transaction_request(transaction_id)}, 15)
    assert answer["retval"]["status"] == "OK", answer


def _stop(peer: EverestPeer, transaction_id: str) -> None:
    answer = peer.call("stop_transaction", {"transaction_id": transaction_id}, 15)
    assert answer["retval"]["status"] == "OK", answer
    assert answer["retval"]["signed_meter_value"]["signed_meter_data"]


def test_forged_presences_mid_transaction_do_not_end_the_module(
    module: ModuleProcess, peer: EverestPeer, mosquitto: Broker
) -> None:
    _start(peer, "tx-forged-presence")
    peer.send_raw(PRESENCE, FORGED)
    wait_until(lambda: "its start time is before 2000" in module.log(), 10, what="the refusal")
    # Credible on its face, but nobody answers for it.
    ghost = Instance("0badc0ffee02", 4242, "elsewhere", time.time() - 60)
    peer.send_raw(PRESENCE, ghost.payload())
    wait_until(lambda: "did not answer an ask" in module.log(), 15, what="the unanswered ask")
    for garbage in (b"[]", b"NaN", b'{"instance": 1}', b"{" * 5000, b"x" * 1_000_000):
        peer.send_raw(PRESENCE, garbage)
    wait_until(lambda: "that is no presence" in module.log(), 10, what="the garbage to be read")
    _stop(peer, "tx-forged-presence")
    assert module.process.poll() is None, module.log_tail()
    assert "runs twice" not in module.log()
    assert "Traceback" not in module.log()
    assert not [e for e in peer.errors_raised if e["sub_type"] == "DuplicateModuleId"]
    # Its own presence is the retained one again.
    retained = _retained(mosquitto, PRESENCE)
    assert retained is not None
    assert retained.pid == module.pid


def _retained(broker: Broker, topic: str) -> Instance | None:
    seen: list[Instance | None] = []
    bus = MqttBus(broker.settings, "test-retained", clean_session=True)
    bus.subscribe(topic, lambda m: seen.append(Instance.parse(m.payload)))
    bus.connect(5)
    try:
        wait_until(lambda: seen, 10, what="the retained presence")
    finally:
        bus.close()
    return seen[0]


def test_an_answering_claimant_is_reported_once_and_the_module_keeps_serving(
    module: ModuleProcess, peer: EverestPeer, mosquitto: Broker
) -> None:
    _start(peer, "tx-two-instances")
    other = Instance("c1a1ac1a1a1a", 4343, "other-host", time.time() - 3600)
    with Claimant(mosquitto, other, base=f"everest/lem_dcbm/{MODULE_ID}") as claimant:
        claimant.announce()
        wait_until(
            lambda: [e for e in peer.errors_raised if e["sub_type"] == "DuplicateModuleId"],
            20,
            what="the error raised",
        )
        _stop(peer, "tx-two-instances")
        _start(peer, "tx-two-instances-2")
        claimant.announce()  # again: still one line, one error
        _stop(peer, "tx-two-instances-2")
        said = module.log().splitlines()
        lines = [line for line in said if "runs twice" in line and " ERROR " in line]
        assert len(lines) == 1, lines
        assert "instance c1a1ac1a1a1a" in lines[0]
        assert "other-host" in lines[0]
        assert f"pid {module.pid} on {socket.gethostname()}" in lines[0]
        raised = [e for e in peer.errors_raised if e["sub_type"] == "DuplicateModuleId"]
        assert len(raised) == 1
        assert raised[0]["type"] == "powermeter/VendorError"
        claimant.announce(online=False)
        wait_until(
            lambda: [e for e in peer.errors_cleared if e["sub_type"] == "DuplicateModuleId"],
            10,
            what="the error cleared",
        )
    assert module.process.poll() is None


def test_a_retained_garbage_presence_does_not_stop_a_start(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    peer.send_raw(
        PRESENCE,
        b'{"instance":"x","pid":1,"host":"h","started":NaN,"state":"online"}',
        retain=True,
    )
    config = write_config(tmp_path / "config.yaml", simulator_config(simulator))
    with start_module(tmp_path / "module", config, mosquitto.port) as started:
        started.wait_ready()
        assert "Traceback" not in started.log()


GARBAGE = [
    b'{"instance":"x","pid":1,"host":"h","started":NaN,"state":"online"}',
    b'{"instance":"x","pid":1,"host":"h","started":"inf","state":"online"}',
    b'{"instance":"x","pid":1,"host":"h","started":Infinity,"state":"online"}',
    b'{"instance":"x","pid":1,"host":"h","started":1e400,"state":"online"}',
    b'{"instance":"x","pid":1,"host":"h","started":1e300,"state":"online"}',
    json.dumps(
        {"instance": "x", "pid": 2**70, "host": "h", "started": 1e9, "state": "online"}
    ).encode(),
    json.dumps(
        {"instance": "x", "pid": 1, "host": "h", "started": 2**1100, "state": "online"}
    ).encode(),
    json.dumps(
        {"instance": "x", "pid": True, "host": "h", "started": 1e9, "state": "online"}
    ).encode(),
    json.dumps(
        {"instance": "x", "pid": -1, "host": "h", "started": 1e9, "state": "online"}
    ).encode(),
    json.dumps(
        {"instance": ["x"], "pid": 1, "host": "h", "started": 1e9, "state": "online"}
    ).encode(),
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b"x" * 2_000_000,
    b"\xff\xfe",
    b"null",
    b"12",
    b'"online"',
    b"",
]


@pytest.mark.parametrize("payload", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_retained_presence_never_fails_a_claim(
    mosquitto: Broker, peer: EverestPeer, payload: bytes
) -> None:
    guard = InstanceGuard(mosquitto.settings, "pm", answer_wait_s=30)
    peer.send_raw(guard.presence_topic, payload, retain=True)
    started = time.monotonic()
    guard.claim(timeout_s=10)
    guard.close()
    assert time.monotonic() - started < 20  # never waited for an answer from garbage


@pytest.mark.parametrize(
    ("offset", "why"),
    [(3 * 86400.0, "in the future"), (-time.time(), "before 2000"), (-2e9, "before 2000")],
    ids=["future", "epoch", "1906"],
)
def test_a_claimant_with_an_impossible_start_time_never_wins_even_if_it_answers(
    mosquitto: Broker, caplog: pytest.LogCaptureFixture, offset: float, why: str
) -> None:
    guard = InstanceGuard(mosquitto.settings, "pm", answer_wait_s=5)
    base = guard.presence_topic.rsplit("/", 1)[0]
    liar = Instance("11a711a711a7", 4444, "elsewhere", guard.me.started + offset)
    with Claimant(mosquitto, liar, base=base) as claimant:
        claimant.announce()
        with caplog.at_level(logging.WARNING, logger="lem_dcbm.everest.presence"):
            guard.claim(timeout_s=10)
        guard.close()
    assert f"its start time is {why}" in caplog.text


def test_a_real_running_instance_still_refuses_a_start(mosquitto: Broker) -> None:
    """The claim of a live process that answers: refused, naming it (not after 2000 only)."""
    guard = InstanceGuard(mosquitto.settings, "pm", answer_wait_s=5)
    base = guard.presence_topic.rsplit("/", 1)[0]
    other = Instance("0ther0ther00", 4545, "elsewhere", time.time() - 10)
    with Claimant(mosquitto, other, base=base) as claimant:
        claimant.announce()
        with pytest.raises(DuplicateInstance, match="instance 0ther0ther00"):
            guard.claim(timeout_s=10)
