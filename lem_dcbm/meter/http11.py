"""HTTP/1.1 on the wire, as far as the meter needs it: a request's bytes, an answer's framing.

The module asks the meter for a reading every second over one kept-alive connection.
``http.client`` did that with a request builder, a response object and a new buffered
reader per answer, and read each answer's head with ``email.parser``. Here a request is
one string and an answer is read from the connection's one buffered reader: over TLS a
reading's exchange takes 47 µs of CPU instead of 80 in a hot loop, and the module at
1 Hz about a tenth less CPU in all (bench/RESULTS.md).

What ``http.client`` guarantees is kept, with its exception types, which the transport
translates (``transport._translate``) and reads for a stale connection
(``RemoteDisconnected``):

- the status line and each header line at most 64 KiB (``LineTooLong``), at most 100
  lines in a head (``HTTPException``), a status line that is not ``HTTP/x.y NNN ...``
  refused (``BadStatusLine``, ``UnknownProtocol``), a connection closed before any answer
  is ``RemoteDisconnected``;
- 1xx answers are skipped; the first of repeated headers counts; ``chunked`` wins over a
  ``Content-Length``; a negative or unreadable length means none; 204 and 304 have no
  body; an answer with neither length nor chunks runs to the end of the connection;
- a body that ends before its length (or a chunk before its size, or a chunk size that
  is not hex) is ``IncompleteRead``.

A body is read up to ``limit + 1`` bytes: a longer answer is cut there and its
connection is not reused. ``SocketReader`` shows what it holds beyond an answer, so that
bytes a meter sent after one are never read as the start of the next.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

#: ``http.client``'s limits on the answer's head.
MAX_LINE = 65536
MAX_HEADERS = 100
#: What a request line's target must not hold (as ``http.client`` refuses it).
_FORBIDDEN_IN_TARGET = frozenset(chr(code) for code in (*range(0x21), 0x7F))
#: Methods whose request carries a length even without a body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class LineReader(Protocol):
    """What an answer is read from: a buffered reader of the connection."""

    def readline(self, limit: int = -1, /) -> bytes:
        """One line, at most ``limit`` bytes; fewer at the end of the connection."""
        ...

    def read(self, size: int = -1, /) -> bytes:
        """``size`` bytes; fewer at the end of the connection."""
        ...


class SocketReader:
    """The connection's reader, whose buffer can be seen: bytes the meter sent after a
    whole answer are no part of the next one, and show in ``buffered`` before it is asked.
    """

    #: How much one receive asks for; an answer of the meter is a few KiB at most.
    CHUNK = 65536

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return len(self._buffer)

    def _fill(self) -> bool:
        data = self._sock.recv(self.CHUNK)
        self._buffer += data
        return bool(data)

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def readline(self, limit: int = -1, /) -> bytes:
        """As ``io.BufferedReader.readline``: up to and with the newline, at most ``limit``."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(self._buffer):
                return self._take(limit)
            searched = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer))

    def read(self, size: int = -1, /) -> bytes:
        """As ``io.BufferedReader.read``: ``size`` bytes, fewer only at the end (-1: all)."""
        while (size < 0 or len(self._buffer) < size) and self._fill():
            pass
        return self._take(len(self._buffer) if size < 0 else size)


class Headers:
    """Header fields by lower-case name, each with its values in the order received."""

    def __init__(self) -> None:
        self._fields: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        """Add one field (a repeated name keeps every value)."""
        self._fields.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any case), or ``default``."""
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (any case)."""
        return self._fields.get(name.lower(), [])


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer off the wire."""

    status: int
    headers: Headers
    #: At most ``limit + 1`` bytes: longer means the answer was cut there.
    body: bytes
    #: Whether the connection can carry the next request.
    reusable: bool


def host_header(host: str, port: int, default_port: int) -> str:
    """``Host`` for ``host:port`` (the port left out when it is the scheme's own)."""
    netloc = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return netloc if port == default_port else f"{netloc}:{port}"


def request_bytes(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """A whole request: the line, ``Host``, ``Accept-Encoding: identity``, the headers given,
    a ``Content-Length`` where there is a body (or the method wants one), then the body.

    Sent in one write: a head and a body in two would wait for the peer's delayed ACK.
    """
    if not target or _FORBIDDEN_IN_TARGET.intersection(target):
        raise http.client.InvalidURL(f"URL can't contain control characters: {target!r}")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body or b'')}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + (body or b"")


def read_headers(rfile: LineReader) -> Headers:
    """The header lines up to the blank one; a folded line continues the field before.

    As ``http.client`` counts: the blank line is one of the 100 lines a head may have.
    """
    headers = Headers()
    name = ""
    for _ in range(MAX_HEADERS):
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            values = headers.get_all(name) if name else []
            if values:
                values[-1] = f"{values[-1]} {text.strip()}"
            continue
        field, colon, value = text.partition(":")
        if colon and field and field == field.strip():
            name = field
            headers.add(field, value.strip())
    raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")


def _status_line(rfile: LineReader) -> tuple[int, int]:
    """``(version, status)`` of the status line: version 10 or 11, as ``http.client``."""
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("status line")
    if not line:
        raise http.client.RemoteDisconnected("Remote end closed connection without response")
    text = line.decode("iso-8859-1")
    parts = text.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise http.client.BadStatusLine(text)
    version, code = parts[0], parts[1]
    if not (len(code) == 3 and code.isdigit() and code.isascii()) or code[0] == "0":
        raise http.client.BadStatusLine(text)
    if version in ("HTTP/1.0", "HTTP/0.9"):
        return 10, int(code)
    if version.startswith("HTTP/1."):
        return 11, int(code)
    raise http.client.UnknownProtocol(version)


def _keeps_open(version: int, headers: Headers) -> bool:
    connection = (headers.get("connection") or "").lower()
    if version == 11:
        return "close" not in connection
    # HTTP/1.0 closes unless it says otherwise.
    proxy = (headers.get("proxy-connection") or "").lower()
    return bool(headers.get("keep-alive")) or "keep-alive" in connection or "keep-alive" in proxy


def _length(headers: Headers) -> int | None:
    text = headers.get("content-length")
    try:
        length = int(text) if text else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


def _read_exactly(rfile: LineReader, count: int, owed: int, before: bytes = b"") -> bytes:
    """``count`` bytes; fewer (the connection ended) raise ``IncompleteRead`` with ``owed``."""
    data = rfile.read(count)
    if len(data) < count:
        raise http.client.IncompleteRead(before + data, owed - len(data))
    return data


def _read_chunked(rfile: LineReader, limit: int) -> tuple[bytes, bool]:
    """The body of a chunked answer up to ``limit + 1`` bytes, and whether it was all read."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("chunk size")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            size = -1
        if size < 0 or not size_text.isalnum():
            raise http.client.IncompleteRead(b"".join(parts))
        if size == 0:
            # The trailer, to its blank line: the connection is then ready again.
            read_headers(rfile)
            return b"".join(parts), True
        take = min(size, limit + 1 - total)
        parts.append(_read_exactly(rfile, take, size, b"".join(parts)))
        total += take
        if total > limit:
            return b"".join(parts), False
        _read_exactly(rfile, 2, 2, b"".join(parts))  # the CRLF after the chunk


def read_answer(rfile: LineReader, limit: int) -> Answer:
    """The next answer on the connection whose buffered reader is ``rfile``."""
    version, status = _status_line(rfile)
    headers = read_headers(rfile)
    while 100 <= status < 200:
        # Interim answers (100 Continue): the real one follows.
        version, status = _status_line(rfile)
        headers = read_headers(rfile)
    keeps_open = _keeps_open(version, headers)
    coding = headers.get("transfer-encoding")
    if coding is not None and coding.lower() == "chunked":
        body, complete = _read_chunked(rfile, limit)
        return Answer(status, headers, body, keeps_open and complete)
    length = 0 if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) else None
    if length is None:
        length = _length(headers)
    if length is None:
        # No length: the body is everything until the meter closes the connection.
        return Answer(status, headers, rfile.read(limit + 1), False)
    take = min(length, limit + 1)
    body = _read_exactly(rfile, take, length)
    return Answer(status, headers, body, keeps_open and take == length)
