"""Two processes with the same module id: the second refuses to start and names the first.

Real mosquitto, real module processes. Without the presence check both would share one
MQTT client id and throw each other off the broker in a reconnect loop, both driving
the same meter.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from lem_dcbm.everest.bus import MqttBus, stable_client_id
from lem_dcbm.everest.presence import DuplicateInstance, Instance, InstanceGuard
from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    Simulator,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.health import check_health

pytestmark = pytest.mark.integration


@pytest.fixture
def config(tmp_path: Path, simulator: Simulator) -> Path:
    return write_config(tmp_path / "config.yaml", simulator_config(simulator))


def test_second_instance_refuses_to_start_and_names_the_first(
    tmp_path: Path, mosquitto: Broker, config: Path
) -> None:
    with start_module(tmp_path / "first", config, mosquitto.port) as first:
        first.wait_ready()
        with start_module(tmp_path / "second", config, mosquitto.port) as second:
            code = second.process.wait(timeout=30)
            said = second.log()
        assert code == 1, said
        refusals = [line for line in said.splitlines() if line.startswith("lem-dcbm: ")]
        assert len(refusals) == 1, said
        assert refusals[0].startswith(f"lem-dcbm: module id {MODULE_ID} is already running: ")
        assert f"pid {first.pid} on " in refusals[0]
        assert "refusing to start a second driver for the same meter" in refusals[0]
        # The first one says what happened, kept its broker link and still reads its meter.
        log = first.log()
        assert "another process tried to start with this module id" in log
        assert "disconnected from the MQTT broker" not in log
        heartbeat = first.health_path
        assert heartbeat is not None
        beat = heartbeat.stat().st_mtime
        wait_until(lambda: heartbeat.stat().st_mtime > beat, timeout=10, what="a new beat")
        assert check_health(heartbeat, max_age_s=5)[0]
        assert first.process.poll() is None


def test_instance_that_died_does_not_block_a_restart(
    tmp_path: Path, mosquitto: Broker, config: Path
) -> None:
    with start_module(tmp_path / "first", config, mosquitto.port) as first:
        first.wait_ready()
        first.kill()
    with start_module(tmp_path / "again", config, mosquitto.port) as again:
        again.wait_ready()


def _publish_presence(broker: Broker, guard: InstanceGuard, other: Instance) -> None:
    bus = MqttBus(broker.settings, "test-presence", clean_session=True)
    bus.connect(5)
    bus.publish(guard.presence_topic, other.payload(), retain=True)
    bus.close()


def test_guard_refuses_a_second_claim(mosquitto: Broker) -> None:
    first = InstanceGuard(mosquitto.settings, "pm")
    first.claim()
    second = InstanceGuard(mosquitto.settings, "pm", answer_wait_s=5)
    try:
        with pytest.raises(DuplicateInstance, match=f"instance {first.me.token}"):
            second.claim()
    finally:
        first.close()
    # Stopped cleanly: the module id is free again.
    third = InstanceGuard(mosquitto.settings, "pm", answer_wait_s=5)
    third.claim()
    third.close()


def test_stale_presence_of_a_vanished_host_is_taken_over_after_the_wait(
    mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that crashed leaves 'online' until the broker's keepalive notices."""
    guard = InstanceGuard(mosquitto.settings, "pm", answer_wait_s=0.5)
    ghost = Instance("0badc0ffee00", 4242, "elsewhere", time.time() - 60)
    _publish_presence(mosquitto, guard, ghost)
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.everest.presence"):
        guard.claim()
    guard.close()
    assert "(instance 0badc0ffee00)) did not answer: it is gone; starting" in caplog.text


def test_stale_presence_of_a_dead_process_on_this_host_is_taken_over_at_once(
    mosquitto: Broker,
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    guard = InstanceGuard(mosquitto.settings, "pm", answer_wait_s=30)
    ghost = Instance("0badc0ffee01", gone.pid, socket.gethostname(), time.time() - 60)
    _publish_presence(mosquitto, guard, ghost)
    started = time.monotonic()
    guard.claim()
    guard.close()
    assert time.monotonic() - started < 10  # never waited the 30 s for an answer


def test_two_claims_at_once_exactly_one_wins(mosquitto: Broker) -> None:
    """Both may see no retained presence; the broker's order of their presences decides."""
    guards = [InstanceGuard(mosquitto.settings, "pm", answer_wait_s=5) for _ in range(3)]
    outcomes: dict[int, BaseException | None] = {}
    go = threading.Barrier(len(guards))

    def claim(index: int) -> None:
        go.wait()
        try:
            guards[index].claim(timeout_s=10)
            outcomes[index] = None
        except DuplicateInstance as err:
            outcomes[index] = err

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(guards))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        winners = [i for i, outcome in outcomes.items() if outcome is None]
        assert len(outcomes) == len(guards)
        assert len(winners) == 1, outcomes
        # Each refusal names another instance that answered (the winner, or a claimant
        # that announced itself while it waited), never itself.
        for index, outcome in outcomes.items():
            assert outcome is None or guards[index].me.token not in str(outcome)
            assert outcome is None or "refusing to start a second driver" in str(outcome)
    finally:
        for guard in guards:
            guard.close()


def test_a_client_that_does_not_announce_itself_is_named_as_the_cause(
    tmp_path: Path, mosquitto: Broker, config: Path
) -> None:
    """An older lem-dcbm (no presence) with the same module id: a fight, now with a name."""
    client_id = stable_client_id("everest/", MODULE_ID)
    with start_module(tmp_path / "first", config, mosquitto.port) as module:
        module.wait_ready()
        intruder = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        intruder.reconnect_delay_set(0.2, 0.5)
        intruder.connect_async(mosquitto.host, mosquitto.port)
        intruder.loop_start()
        try:
            wait_until(
                lambda: "another client uses the same MQTT client id" in module.log(),
                30,
                what="the module to name the fight",
            )
        finally:
            intruder.disconnect()
            intruder.loop_stop()
        named = [line for line in module.log().splitlines() if "another client uses" in line]
        assert len(named) == 1
        assert f"module id {MODULE_ID}" in named[0]
        assert client_id in named[0]
