"""A meter closing kept-alive connections, over real sockets: GET/PUT resent, POST never."""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lem_dcbm.errors import MeterConnectionError
from lem_dcbm.meter.transport import HttpTransport

pytestmark = pytest.mark.integration


class _OneRequestPerConnection:
    """A raw HTTP server that answers the first request on a connection and drops the next.

    That is what a meter closing an idle keep-alive connection looks like when the close
    races with our next request: the request is sent and then the connection is gone.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.requests: list[str] = []
        #: Released when a connection's handler is done (its second read came back).
        self.handled = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_request(self, stream: Any) -> str:
        line = stream.readline().decode()
        length = 0
        while (header := stream.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        stream.read(length)
        return line.split(" ")[0] if line else ""

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            self.requests.append(self._read_request(stream))
            self._answer(conn)
            method = self._read_request(stream)
            if method:
                self.requests.append(method)
            # Close without answering the second request.
        self.handled.release()

    def _answer(self, conn: socket.socket) -> None:
        body = b'{"result": 1}'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropping_server() -> Iterator[_OneRequestPerConnection]:
    server = _OneRequestPerConnection()
    yield server
    server.close()


def test_get_on_a_dropped_keepalive_connection_succeeds_on_a_fresh_one(
    dropping_server: _OneRequestPerConnection,
) -> None:
    transport = HttpTransport(f"http://127.0.0.1:{dropping_server.port}", timeout_s=5.0)
    try:
        assert transport.request("GET", "/v1/settings")[0] == 200
        assert transport.request("GET", "/v1/settings")[0] == 200
    finally:
        transport.close()
    assert dropping_server.requests == ["GET", "GET", "GET"]
    assert dropping_server.accepted == 2


def test_post_on_a_dropped_keepalive_connection_is_not_resent(
    dropping_server: _OneRequestPerConnection,
) -> None:
    transport = HttpTransport(f"http://127.0.0.1:{dropping_server.port}", timeout_s=5.0)
    try:
        assert transport.request("GET", "/v1/settings")[0] == 200
        with pytest.raises(
            MeterConnectionError, match=r"POST http://[^/]+/v1/legal: connection failed"
        ):
            transport.request("POST", "/v1/legal", json_body={"transactionId": "t"})
    finally:
        transport.close()
    assert dropping_server.requests == ["GET", "POST"]


def test_a_transport_dropped_without_close_closes_its_connection(
    dropping_server: _OneRequestPerConnection,
) -> None:
    # As urllib3's pools did: no socket is left open for the collector to warn about (the
    # suite turns that ResourceWarning into a failure).
    transport = HttpTransport(f"http://127.0.0.1:{dropping_server.port}", timeout_s=5.0)
    assert transport.request("GET", "/v1/settings")[0] == 200
    del transport
    gc.collect()

    # The server reads the end of the connection where a second request would be.
    assert dropping_server.handled.acquire(timeout=10)
    assert dropping_server.requests == ["GET"]


class _ClosingAfterEachAnswer(_OneRequestPerConnection):
    """Answers one request per connection and closes the connection at once."""

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            self.requests.append(self._read_request(stream))
            self._answer(conn)
        self.handled.release()


def test_a_post_after_the_meter_closed_the_idle_connection_goes_out_on_a_fresh_one() -> None:
    # The close is seen before the request is sent, so even a POST (never re-sent) works.
    server = _ClosingAfterEachAnswer()
    transport = HttpTransport(f"http://127.0.0.1:{server.port}", timeout_s=5.0)
    try:
        assert transport.request("GET", "/v1/status")[0] == 200
        assert server.handled.acquire(timeout=10)
        assert transport.request("POST", "/v1/legal", json_body={"transactionId": "t"})[0] == 200
    finally:
        transport.close()
        server.close()
    assert server.requests == ["GET", "POST"]
    assert server.accepted == 2


class _TrailingBytesAfterEachAnswer(_OneRequestPerConnection):
    """Answers every request on a connection, each answer followed by bytes no one asked for.

    The answer and the bytes go out in one write: the reader takes both in one receive.
    """

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            while method := self._read_request(stream):
                self.requests.append(method)
                body = b'{"result": 1}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sEXTRA\r\n" % (len(body), body)
                )
        self.handled.release()


def test_bytes_after_an_answer_send_the_next_request_on_a_fresh_connection() -> None:
    # A POST too: the leftover is seen before the request is sent, never read as its answer.
    server = _TrailingBytesAfterEachAnswer()
    transport = HttpTransport(f"http://127.0.0.1:{server.port}", timeout_s=5.0)
    try:
        assert transport.request("GET", "/v1/status") == (200, '{"result": 1}')
        assert transport.request("POST", "/v1/legal", json_body={"transactionId": "t"}) == (
            200,
            '{"result": 1}',
        )
    finally:
        transport.close()
        server.close()
    assert server.requests == ["GET", "POST"]
    assert server.accepted == 2
