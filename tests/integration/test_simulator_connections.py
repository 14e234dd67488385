"""Which connections a scheme switch or a power cycle drops."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lem_dcbm.simulator.connections import ConnectionRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for server_side, client_side in made:
        server_side.close()
        client_side.close()


def closed(client_side: socket.socket) -> bool:
    """True when the other end was shut down; the shutdown is done when close_idle returns."""
    client_side.setblocking(False)
    try:
        return client_side.recv(1) == b""
    except BlockingIOError:
        return False


def test_a_switch_drops_only_idle_connections_of_the_old_scheme(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    registry = ConnectionRegistry()
    for _ in range(3):
        pairs.append(socket.socketpair())
    plain_idle = registry.add(pairs[0][0], tls=False)
    tls_handshaking = registry.add(pairs[1][0], tls=True)
    plain_busy = registry.add(pairs[2][0], tls=False)
    plain_busy.idle = False
    assert registry.idle() == 2
    # Switched to HTTPS: a TLS connection still in its handshake must survive.
    assert registry.close_idle(other_than_tls=True) == 1
    assert closed(pairs[0][1])
    assert not closed(pairs[1][1])
    assert not closed(pairs[2][1])
    assert plain_idle.tls is False
    assert tls_handshaking.tls is True


def test_a_power_cycle_drops_every_idle_connection(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    registry = ConnectionRegistry()
    for tls in (False, True):
        pairs.append(socket.socketpair())
        registry.add(pairs[-1][0], tls=tls)
    assert registry.close_idle() == 2
    assert all(closed(client_side) for _, client_side in pairs)
