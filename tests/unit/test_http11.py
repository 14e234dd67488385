"""HTTP/1.1 on the wire: the same answers as ``http.client``, the same refusals."""

from __future__ import annotations

import http.client
import io
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lem_dcbm.meter import http11

LIMIT = 1024

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1;x=y\r\n{\r\n1\r\n}\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: -7\r\n\r\nrest",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nrest",
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\n\r\nto the end",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200",
    b"HTTP/1.1 two hundred OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/2 200 OK\r\n\r\n",
    b"\x00\xff\xfe binary \x80\r\n\r\n",
    b"",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(150)) + b"\r\n{}",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(99)) + b"\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000,
]


class _Socket:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))  # type: ignore[arg-type]


def _standard(data: bytes) -> tuple[int, str | None, bytes, bool] | type[Exception]:
    """What ``http.client`` makes of ``data`` (the exception type when it refuses it)."""
    response = http.client.HTTPResponse(_Socket(data), method="GET")  # type: ignore[arg-type]
    try:
        response.begin()
        body = response.read(LIMIT + 1)
        if len(body) <= LIMIT and response.length:
            raise http.client.IncompleteRead(body, response.length)
    except (http.client.HTTPException, ValueError) as exc:
        return type(exc)
    reusable = not response.will_close and len(body) <= LIMIT
    return response.status, response.getheader("Content-Type"), body, reusable


def _ours(data: bytes) -> tuple[int, str | None, bytes, bool] | type[Exception]:
    try:
        answer = http11.read_answer(io.BufferedReader(io.BytesIO(data)), LIMIT)  # type: ignore[arg-type]
    except (http.client.HTTPException, ValueError) as exc:
        return type(exc)
    content_type = ", ".join(answer.headers.get_all("Content-Type")) or None
    return answer.status, content_type, answer.body, answer.reusable


@pytest.mark.parametrize("data", ANSWERS, ids=range(len(ANSWERS)))
def test_every_answer_reads_as_http_client_reads_it(data: bytes) -> None:
    assert _ours(data) == _standard(data)


def _over_a_socket(data: bytes) -> tuple[int, str | None, bytes, bool] | type[Exception]:
    """``_ours``, read by the transport's ``SocketReader`` from a real socket."""
    ours, peer = socket.socketpair()
    sender = threading.Thread(target=lambda: (peer.sendall(data), peer.shutdown(socket.SHUT_WR)))
    sender.start()
    try:
        answer = http11.read_answer(http11.SocketReader(ours), LIMIT)
    except (http.client.HTTPException, ValueError) as exc:
        return type(exc)
    finally:
        sender.join()
        ours.close()
        peer.close()
    content_type = ", ".join(answer.headers.get_all("Content-Type")) or None
    return answer.status, content_type, answer.body, answer.reusable


@pytest.mark.parametrize("data", ANSWERS, ids=range(len(ANSWERS)))
def test_the_socket_reader_reads_every_answer_as_http_client(data: bytes) -> None:
    assert _over_a_socket(data) == _standard(data)


def test_bytes_after_a_whole_answer_stay_in_the_readers_buffer() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}EXTRA")
        reader = http11.SocketReader(ours)
        answer = http11.read_answer(reader, LIMIT)
        assert (answer.body, answer.reusable) == (b"{}", True)
        assert reader.buffered == len(b"EXTRA")


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([b"200 OK", b"201 Created", b"404 Not Found", b"204 No Content"]),
    headers=st.lists(
        st.sampled_from(
            [
                b"Content-Length: 3",
                b"Content-Length: 0",
                b"Content-Length: 12",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip",
                b"Connection: close",
                b"Connection: keep-alive",
                b"Keep-Alive: timeout=5",
                b"Content-Type: application/json",
                b"X-Meter: DCBM",
            ]
        ),
        max_size=4,
    ),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    body=st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"{}\r\n", b"0\r\n\r\n"]),
)
def test_generated_answers_read_as_http_client_reads_them(
    status: bytes, headers: list[bytes], version: bytes, body: bytes
) -> None:
    data = version + b" " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    data += b"\r\n" + body
    assert _ours(data) == _standard(data)


def test_a_folded_header_line_continues_the_value_before_it() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain;\r\n charset=latin-1\r\n"
    data += b"Content-Length: 1\r\n\r\nx"
    answer = http11.read_answer(io.BufferedReader(io.BytesIO(data)), LIMIT)  # type: ignore[arg-type]
    # http.client keeps the line break in the value; the charset reads the same either way.
    assert answer.headers.get("content-type") == "text/plain; charset=latin-1"
    assert answer.body == b"x"


def test_a_connection_closed_before_any_answer_is_remote_disconnected() -> None:
    with pytest.raises(http.client.RemoteDisconnected):
        http11.read_answer(io.BufferedReader(io.BytesIO(b"")), LIMIT)  # type: ignore[arg-type]


def test_answers_follow_each_other_on_one_reader() -> None:
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    two = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n1\r\n]\r\n0\r\n\r\n"
    rfile = io.BufferedReader(io.BytesIO(one + two + one))  # type: ignore[arg-type]
    bodies = [http11.read_answer(rfile, LIMIT).body for _ in range(3)]
    assert bodies == [b"{}", b"[]", b"{}"]


def test_a_request_is_one_string_with_host_and_length() -> None:
    get = http11.request_bytes("GET", "/v1/livemeasure", "10.0.0.5", {"Accept": "*/*"}, None)
    assert get == (
        b"GET /v1/livemeasure HTTP/1.1\r\nHost: 10.0.0.5\r\nAccept-Encoding: identity\r\n"
        b"Accept: */*\r\n\r\n"
    )
    post = http11.request_bytes("POST", "/v1/legal", "m", {}, b'{"a":1}')
    assert post.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')
    assert b"Content-Length: 0\r\n" in http11.request_bytes("PUT", "/v1/settings", "m", {}, None)


@pytest.mark.parametrize(
    ("host", "port", "default", "expected"),
    [
        ("10.0.0.5", 80, 80, "10.0.0.5"),
        ("10.0.0.5", 8080, 80, "10.0.0.5:8080"),
        ("fe80::1", 443, 443, "[fe80::1]"),
        ("fe80::1", 8443, 443, "[fe80::1]:8443"),
        ("meter.local", 443, 80, "meter.local:443"),
    ],
)
def test_the_host_header_leaves_out_the_schemes_own_port(
    host: str, port: int, default: int, expected: str
) -> None:
    assert http11.host_header(host, port, default) == expected


@pytest.mark.parametrize("target", ["/v1/ocmf?id=a b", "/v1/\r\nX: y", "", "/v1/\x7f"])
def test_a_target_with_blanks_or_control_characters_is_refused(target: str) -> None:
    with pytest.raises(http.client.InvalidURL):
        http11.request_bytes("GET", target, "m", {}, None)
