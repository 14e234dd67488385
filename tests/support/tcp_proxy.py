"""``TcpProxy``: a TCP relay between a client under test and its server, with a cut switch.

``cut()`` closes every relayed connection on both sides at once (both peers see the
connection end, as when a link drops with a reset or FIN) and stops listening, so new
connection attempts are refused until ``restore()`` listens again on the same port.
One thread accepts; each relayed connection has two pump threads, one per direction.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass, field

_LOGGER = logging.getLogger(__name__)

#: How often the accept thread looks at a changed or closed listener.
_POLL_S = 0.05
_CHUNK = 65536


@dataclass
class _Link:
    """One relayed connection: the accepted client socket and the socket to the target."""

    client: socket.socket
    upstream: socket.socket
    threads: list[threading.Thread] = field(default_factory=list)
    closed: bool = False

    def close(self) -> None:
        """End both sides; the pump threads wake up from ``recv`` and leave."""
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.upstream):
            # The other side may have disconnected already.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class TcpProxy:
    """Relays ``127.0.0.1:port`` to ``target_host:target_port`` until cut."""

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._links: list[_Link] = []
        self._closing = threading.Event()
        self._acceptor: threading.Thread | None = None
        self._pump_threads: list[threading.Thread] = []
        #: Connections accepted and relayed so far.
        self.accepted = 0
        #: Connections refused because the target did not accept them.
        self.target_failures = 0

    @property
    def port(self) -> int:
        """The port clients connect to (fixed once started)."""
        return self._port

    @property
    def is_cut(self) -> bool:
        """True between ``cut()`` and ``restore()``."""
        with self._lock:
            return self._listener is None

    @property
    def active_connections(self) -> int:
        """Relayed connections currently open."""
        with self._lock:
            return sum(1 for link in self._links if not link.closed)

    def start(self) -> TcpProxy:
        """Listen and start relaying; return self."""
        if self._acceptor is not None:
            raise RuntimeError("the proxy is already started")
        with self._lock:
            self._listener = self._listen()
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._acceptor.start()
        return self

    def cut(self) -> int:
        """Close every relayed connection and refuse new ones; return how many were closed."""
        with self._lock:
            listener, self._listener = self._listener, None
            links, self._links = self._links, []
            open_links = [link for link in links if not link.closed]
            for link in links:
                link.close()
        if listener is not None:
            # close() alone leaves the socket listening while the accept thread's select()
            # still holds it; shutdown() stops listening at once and wakes that select().
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        _LOGGER.info("proxy to %s:%d cut (%d connections)", *self.target, len(open_links))
        return len(open_links)

    def restore(self) -> None:
        """Listen again on the same port; returns once new connections are accepted."""
        with self._lock:
            if self._listener is None:
                self._listener = self._listen()
        _LOGGER.info("proxy to %s:%d restored", *self.target)

    def close(self, timeout_s: float = 5.0) -> None:
        """Cut, stop the threads and wait for them (up to ``timeout_s``)."""
        self._closing.set()
        self.cut()
        deadline = time.monotonic() + timeout_s
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._pump_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Rebinding the same port after a cut must not wait for TIME_WAIT to expire.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self._port))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        self._port = listener.getsockname()[1]
        return listener

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                self._closing.wait(_POLL_S)
                continue
            try:
                readable, _, _ = select.select([listener], [], [], _POLL_S)
                if not readable:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                continue  # the listener was closed by cut() while we waited on it
            self._relay(client)

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=2.0)
        except OSError as err:
            _LOGGER.debug("proxy target %s:%d refused: %s", *self.target, err)
            self.target_failures += 1
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, upstream)
        with self._lock:
            if self._listener is None:
                # cut() ran between accept and here: this connection must not survive it.
                link.close()
                return
            self._links = [known for known in self._links if not known.closed]
            self._links.append(link)
            self.accepted += 1
            self._pump_threads = [thread for thread in self._pump_threads if thread.is_alive()]
            for source, sink, name in ((client, upstream, "up"), (upstream, client, "down")):
                thread = threading.Thread(
                    target=self._pump, args=(link, source, sink), name=f"proxy-{name}", daemon=True
                )
                link.threads.append(thread)
                self._pump_threads.append(thread)
        for thread in link.threads:
            thread.start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass  # either side went away, or cut() closed the link
        with self._lock:
            link.close()
