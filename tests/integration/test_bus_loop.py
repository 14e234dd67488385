"""paho's network loop waits a quarter of the keepalive, not one second: what must not change.

The loop wakes less often when idle; a publication from another thread must still leave
at once, the keepalive pings must still keep the link, and a broker that stops answering
must still be noticed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from lem_dcbm.config import BrokerSettings
from lem_dcbm.everest.bus import LOOP_TIMEOUT_SHARE, Message, MqttBus
from lem_dcbm.harness import Broker, wait_until

pytestmark = pytest.mark.integration

_PAHO_LOGGER = logging.getLogger("lem_dcbm.everest.bus.paho")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))


@pytest.fixture
def paho_lines() -> Iterator[_Lines]:
    """paho's debug lines of every bus in this test."""
    handler = _Lines()
    level = _PAHO_LOGGER.level
    _PAHO_LOGGER.setLevel(logging.DEBUG)
    _PAHO_LOGGER.addHandler(handler)
    try:
        yield handler
    finally:
        _PAHO_LOGGER.removeHandler(handler)
        _PAHO_LOGGER.setLevel(level)


def test_the_loop_waits_a_quarter_of_the_keepalive() -> None:
    bus = MqttBus(BrokerSettings(host="127.0.0.1", port=1), "loop-share", keepalive_s=10)
    assert bus._client.loop_timeout_s == 10 * LOOP_TIMEOUT_SHARE == 2.5


def test_a_publication_from_another_thread_leaves_without_waiting_for_the_loop(
    mosquitto: Broker,
) -> None:
    """With a 150 s loop timeout, the message arrives long before the loop would wake."""
    received = threading.Event()
    receiver = MqttBus(mosquitto.settings, "loop-receiver", clean_session=True)
    receiver.subscribe("loop/test", lambda message: received.set())
    receiver.connect()
    sender = MqttBus(mosquitto.settings, "loop-sender", keepalive_s=600, clean_session=True)
    sender.connect()
    try:
        assert sender._client.loop_timeout_s == 150
        # From a thread of its own, as the ready loop publishes.
        publisher = threading.Thread(target=lambda: sender.publish("loop/test", b"x", qos=0))
        publisher.start()
        publisher.join()
        assert received.wait(10), "the publication waited for the loop's timeout"
    finally:
        sender.close()
        receiver.close()


def test_keepalive_pings_keep_an_idle_link(mosquitto: Broker, paho_lines: _Lines) -> None:
    """The broker drops a client silent for 1.5 keepalives; the pings must go out in time."""
    lost: list[Message | None] = []
    bus = MqttBus(mosquitto.settings, "loop-idle", keepalive_s=1, clean_session=True)
    bus.on_lost(lambda: lost.append(None))
    bus.connect()
    try:
        wait_until(lambda: paho_lines.count("Received PINGRESP") >= 4, 20, what="4 PINGRESPs")
        assert bus.connected
        assert bus.connections == 1
        assert not lost
    finally:
        bus.close()


def test_a_broker_that_stops_answering_is_noticed(mosquitto: Broker) -> None:
    """The TCP link stays up (the broker is stopped, not gone): only the keepalive tells."""
    lost = threading.Event()
    bus = MqttBus(mosquitto.settings, "loop-lost", keepalive_s=1, clean_session=True)
    bus.on_lost(lost.set)
    bus.connect()
    assert mosquitto.process is not None
    pid = mosquitto.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # A ping after one keepalive (+ a loop timeout), no answer for one more.
        assert lost.wait(15), "a silent broker was not noticed"
        assert not bus.connected
    finally:
        os.kill(pid, signal.SIGCONT)
        bus.close(timeout_s=1.0)


def test_paho_formats_no_line_per_packet_while_the_link_is_up(mosquitto: Broker) -> None:
    """paho formats a line per packet for a log callback: it is set only while down."""
    lost = threading.Event()
    bus = MqttBus(mosquitto.settings, "loop-log", keepalive_s=1, clean_session=True)
    bus.on_lost(lost.set)
    # Before the first connection: a TLS broker's late refusal shows only in paho's log.
    assert bus._client.on_log is not None
    bus.connect()
    assert mosquitto.process is not None
    pid = mosquitto.process.pid
    try:
        assert bus._client.on_log is None
        os.kill(pid, signal.SIGSTOP)
        try:
            assert lost.wait(15), "a silent broker was not noticed"
            assert bus._client.on_log is not None
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: bus.connections == 2, 20, what="the reconnection")
        assert bus._client.on_log is None
    finally:
        bus.close(timeout_s=1.0)


def test_a_publication_racing_the_close_is_dropped_not_raised(mosquitto: Broker) -> None:
    """A heartbeat thread may publish while the bus closes: after the close it is dropped."""
    bus = MqttBus(mosquitto.settings, "loop-race", clean_session=True)
    bus.connect()
    errors: list[BaseException] = []
    stop = threading.Event()

    def publish_until_stopped() -> None:
        while not stop.is_set():
            try:
                bus.publish("loop/race", b"x", qos=0)
            except Exception as exc:  # noqa: BLE001 - the failure under test
                errors.append(exc)
                return

    publisher = threading.Thread(target=publish_until_stopped)
    publisher.start()
    try:
        bus.close(timeout_s=1.0)
        assert bus.publish("loop/race", b"after", qos=0) is False
    finally:
        stop.set()
        publisher.join(10)
    assert errors == []
