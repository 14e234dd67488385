"""A meter over a real socket that answers each request the way the test says, however badly.

Well-formed answers come from the simulator's own routes (``meter_response``), so a good
answer is a real meter answer. The rest is what a broken or hostile meter (or a network
in between) does on the wire: any status and body, a ``Content-Length`` longer than the
body and then a close, an answer dribbled out a few bytes at a time (each gap shorter
than the client's timeout, the whole far longer), a connection reset (RST, through
``SO_LINGER`` 0), and headers no HTTP parser should accept.

One thread accepts, one thread per connection serves; each request takes the next
``Act`` planned for its method and path (``plan``), or the meter's own answer.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

from lem_dcbm.simulator.device import SimulatedMeter
from lem_dcbm.simulator.routes import meter_response

#: What an ``Act`` may do; ``meter`` is the simulated meter's own, well-formed answer.
KINDS = ("meter", "answer", "truncate", "drip", "reset", "garbage")
#: Heads no client may take for an answer (each is sent, then the connection closes).
GARBAGE_HEADS = (
    b"HTTP/1.1 two hundred OK\r\nContent-Length: 2\r\n\r\n{}",
    b"\x00\xff\xfe binary \x80\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(150)) + b"\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: -7\r\n\r\n",
    b"HTTP/1.1 200",
)
REASONS = {200: b"OK", 201: b"Created"}


@dataclass(frozen=True)
class Act:
    """How to answer one request."""

    kind: str = "meter"
    status: int = 200
    body: bytes = b""
    #: ``truncate``: bytes promised beyond the body; ``garbage``: index into GARBAGE_HEADS.
    extra: int = 1
    #: ``drip``: pause between two chunks (shorter than the client's timeout).
    gap_s: float = 0.05
    #: ``reset``: bytes of the meter's answer sent before the reset.
    before_reset: int = 0

    @property
    def well_formed(self) -> bool:
        """True when the bytes on the wire are a complete HTTP answer, sent at once."""
        return self.kind in ("meter", "answer")


def _head(status: int, body: bytes, content_type: str, length: int | None = None) -> bytes:
    reason = REASONS.get(status, b"Status")
    size = len(body) if length is None else length
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        status,
        reason,
        content_type.encode(),
        size,
    )


def _read_request(stream: BinaryIO) -> tuple[str, str, bytes] | None:
    """Method, target and body of the next request; None when the client is gone."""
    line = stream.readline(65_536)
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    length = 0
    while True:
        header = stream.readline(65_536)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return method, target, stream.read(length) if length else b""


class HostileMeter:
    """A listening socket on 127.0.0.1 in front of ``device``; ``plan`` says what goes wrong."""

    def __init__(self, device: SimulatedMeter) -> None:
        self.device = device
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._plans: dict[tuple[str, str], deque[Act]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        #: (method, path, act kind) of every request served, in order.
        self.served: list[tuple[str, str, str]] = []
        self._accepting = threading.Thread(target=self._accept, name="hostile-meter", daemon=True)
        self._accepting.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def plan(self, method: str, path: str, acts: Iterable[Act]) -> None:
        """Answer the next requests with ``method`` to ``path`` (a prefix) with ``acts``."""
        with self._lock:
            self._plans.setdefault((method, path), deque()).extend(acts)

    def clear(self) -> None:
        """Forget every plan: the meter answers well again."""
        with self._lock:
            self._plans.clear()

    def close(self) -> None:
        """Stop accepting; connections end at their next request."""
        self._closed.set()
        self._listener.close()

    def _next_act(self, method: str, path: str) -> Act:
        with self._lock:
            for (planned_method, prefix), acts in self._plans.items():
                if planned_method == method and path.startswith(prefix) and acts:
                    return acts.popleft()
            return Act()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = conn.makefile("rb")
        try:
            while not self._closed.is_set():
                request = _read_request(stream)
                if request is None:
                    return
                if not self._answer(conn, *request):
                    return
        except (OSError, ValueError):
            return  # the client went away, or sent what a meter would not read either
        finally:
            stream.close()
            conn.close()

    def _answer(self, conn: socket.socket, method: str, target: str, body: bytes) -> bool:
        """Answer one request; False when the connection is to end."""
        split = urlsplit(target)
        act = self._next_act(method, target)
        with self._lock:
            self.served.append((method, target, act.kind))
        if act.kind == "answer":
            conn.sendall(_head(act.status, act.body, "application/json") + act.body)
            return True
        if act.kind == "garbage":
            conn.sendall(GARBAGE_HEADS[act.extra % len(GARBAGE_HEADS)])
            return False
        status, payload, content_type = meter_response(
            self.device, method, split.path, split.query, body
        )
        if act.kind == "truncate":
            length = len(payload) + max(1, act.extra)
            conn.sendall(_head(status, payload, content_type, length) + payload)
            return False
        answer = _head(status, payload, content_type) + payload
        if act.kind == "reset":
            conn.sendall(answer[: act.before_reset])
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if act.kind == "drip":
            for start in range(0, len(answer), 4):
                if self._closed.wait(act.gap_s):
                    return False
                conn.sendall(answer[start : start + 4])
            return True
        conn.sendall(answer)
        return True
