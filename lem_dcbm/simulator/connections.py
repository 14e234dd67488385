"""Bookkeeping of the simulator's TCP connections: which carried meter requests, which idle."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

_LOGGER = logging.getLogger(__name__)


@dataclass(eq=False)
class Connection:
    """One accepted socket; ``counted`` once it carried a meter (non-``/_sim``) request."""

    sock: socket.socket
    #: Accepted while the meter served HTTPS (decided before any handshake).
    tls: bool = False
    idle: bool = True
    counted: bool = False
    open: bool = True


class ConnectionRegistry:
    """All live connections, shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, Connection] = {}
        self.accepted = 0
        self.tls_handshake_failures = 0

    def add(self, sock: socket.socket, tls: bool = False) -> Connection:
        """Track a freshly accepted socket that will speak HTTPS if ``tls``."""
        conn = Connection(sock, tls)
        with self._lock:
            self._live[id(sock)] = conn
        return conn

    def rewrap(self, conn: Connection, sock: socket.socket) -> None:
        """Point ``conn`` at its TLS-wrapped socket."""
        with self._lock:
            self._live.pop(id(conn.sock), None)
            conn.sock = sock
            self._live[id(sock)] = conn

    def find(self, sock: socket.socket) -> Connection | None:
        """The record of ``sock``."""
        with self._lock:
            return self._live.get(id(sock))

    def remove(self, conn: Connection) -> None:
        """Forget a closed connection."""
        with self._lock:
            conn.open = False
            self._live.pop(id(conn.sock), None)

    def count(self, conn: Connection) -> None:
        """Count ``conn`` as a meter connection (once)."""
        with self._lock:
            if not conn.counted:
                conn.counted = True
                self.accepted += 1

    def handshake_failed(self) -> None:
        """Note a TLS handshake that did not complete."""
        with self._lock:
            self.tls_handshake_failures += 1

    def stats(self) -> dict[str, int]:
        """``{"accepted": total meter connections so far, "open": meter connections now}``."""
        with self._lock:
            open_now = sum(1 for conn in self._live.values() if conn.counted)
            return {"accepted": self.accepted, "open": open_now}

    def idle(self) -> int:
        """How many connections wait for their next request (tests wait on this)."""
        with self._lock:
            return sum(1 for conn in self._live.values() if conn.idle)

    def close_idle(self, other_than_tls: bool | None = None) -> int:
        """Shut down every connection waiting for its next request; return how many.

        With ``other_than_tls``, only those of the other scheme: after a switch to HTTPS
        (True) the plain ones, leaving new TLS connections in their handshake alone.
        """
        with self._lock:
            idle = [
                conn
                for conn in self._live.values()
                if conn.idle and (other_than_tls is None or conn.tls != other_than_tls)
            ]
        for conn in idle:
            try:
                # The plain socket method: an SSL socket's own shutdown would tear down
                # its TLS state under the thread that is reading from it.
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
            except OSError:
                _LOGGER.debug("connection already gone")
        return len(idle)
