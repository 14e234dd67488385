"""The transport's deadline watchdog: a request past its deadline has its socket cut.

The watchdog sleeps through quiet spells without being woken by each request; these
check that a request armed while it sleeps is still cut, whether its timeout is as long
as the ones before or shorter than any of them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lem_dcbm.meter.transport import _Watchdog


@dataclass
class _Connection:
    sock: socket.socket


@pytest.fixture
def watchdog() -> _Watchdog:
    """A watchdog of its own (not the process's), so that other tests do not arm it."""
    return _Watchdog()


@pytest.fixture
def hanging() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A socket whose peer never answers."""
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def _cut_within(sock: socket.socket, wait_s: float) -> bool:
    """True when a blocked ``recv`` on ``sock`` ends (the watchdog shut it down)."""
    ended = threading.Event()

    def read() -> None:
        with contextlib.suppress(OSError):
            sock.recv(1)
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    return ended.wait(wait_s)


def _quick_request(watchdog: _Watchdog, seconds: float) -> None:
    deadline = watchdog.arm(seconds)
    assert not watchdog.end(deadline)


def _hanging_request_is_cut(
    watchdog: _Watchdog, sock: socket.socket, timeout_s: float, within_s: float
) -> bool:
    """Arm a request of ``timeout_s`` on ``sock`` that never answers; True once it was cut."""
    deadline = watchdog.arm(timeout_s)
    watchdog.watch(deadline, _Connection(sock))
    cut = _cut_within(sock, within_s)
    return cut and watchdog.end(deadline)


def test_a_request_armed_while_the_watchdog_sleeps_is_cut(
    watchdog: _Watchdog, hanging: tuple[socket.socket, socket.socket]
) -> None:
    for _ in range(3):
        _quick_request(watchdog, 0.3)
    cut = _hanging_request_is_cut(watchdog, hanging[0], 0.3, 10)
    assert cut, "the hanging request was never cut"


def test_a_shorter_timeout_than_any_before_wakes_the_watchdog(
    watchdog: _Watchdog, hanging: tuple[socket.socket, socket.socket]
) -> None:
    """After 60 s requests the watchdog may sleep 60 s; a 0.2 s request must not wait that."""
    _quick_request(watchdog, 60)
    cut = _hanging_request_is_cut(watchdog, hanging[0], 0.2, 30)
    assert cut, "the short request waited for the long sleep"


def test_a_request_after_a_quiet_spell_is_cut(
    watchdog: _Watchdog, hanging: tuple[socket.socket, socket.socket]
) -> None:
    """Nothing armed through a whole sleep: the watchdog waits for work, and is woken."""
    _quick_request(watchdog, 0.1)
    idle = threading.Event()
    # The watchdog's own sleep of 0.1 s, then one more with nothing armed, is the scenario.
    idle.wait(0.5)
    cut = _hanging_request_is_cut(watchdog, hanging[0], 0.2, 10)
    assert cut, "the request after the quiet spell was never cut"
