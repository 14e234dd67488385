"""Reading a request body the ways real clients send one: ``Content-Length`` or chunked.

libcurl (which EVerest's C++ driver uses) sends ``PUT`` and ``POST`` bodies of unknown
size with ``Transfer-Encoding: chunked``; a real meter accepts them. The body is read
exactly to its end, so pipelined requests behind it on the same connection stay intact.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Protocol

from lem_dcbm.errors import LemDcbmError

#: The meter's request bodies are a few hundred bytes; anything this large is refused.
MAX_BODY_BYTES = 64 * 1024
#: A chunk-size line or trailer line longer than this is malformed.
_MAX_LINE = 1024
_HEX = re.compile(rb"[0-9A-Fa-f]{1,8}")


class Stream(Protocol):
    """The buffered reading side of a connection."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; fewer only at the end of the stream."""
        ...

    def readline(self, size: int, /) -> bytes:
        """One line with its newline, at most ``size`` bytes."""
        ...


class BodyError(LemDcbmError):
    """A body that cannot be read; ``status`` is the HTTP answer, the connection must close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_body(headers: Message, stream: Stream, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body announced by ``headers``, read from ``stream``; raise ``BodyError``."""
    coding = headers.get("Transfer-Encoding")
    length = headers.get("Content-Length")
    if coding is not None:
        if length is not None:
            # RFC 9112 6.3: both together may be request smuggling; refuse.
            raise BodyError(400, "both Transfer-Encoding and Content-Length are given")
        if coding.strip().lower() != "chunked":
            raise BodyError(501, f"Transfer-Encoding {coding!r} is not supported")
        return _read_chunked(stream, limit)
    if length is None:
        return b""
    if not length.strip().isdigit():
        raise BodyError(400, f"Content-Length {length!r} is not a number")
    size = int(length)
    if size > limit:
        raise BodyError(413, f"the body exceeds {limit} bytes")
    body = stream.read(size)
    if len(body) != size:
        raise BodyError(400, "the connection ended inside the body")
    return body


def _line(stream: Stream) -> bytes:
    line = stream.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise BodyError(400, "a chunk line is too long")
    if not line.endswith(b"\n"):
        raise BodyError(400, "the connection ended inside the chunked body")
    return line.rstrip(b"\r\n")


def _read_chunked(stream: Stream, limit: int) -> bytes:
    body = bytearray()
    while True:
        # A chunk extension (";name=value") may follow the size; it carries nothing for us.
        size_text = _line(stream).split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            raise BodyError(400, f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise BodyError(413, f"the body exceeds {limit} bytes")
        chunk = stream.read(size)
        if len(chunk) != size:
            raise BodyError(400, "the connection ended inside a chunk")
        body += chunk
        if _line(stream):
            raise BodyError(400, "a chunk is longer than its size says")
    # Trailer fields, ignored, up to the empty line that ends the message.
    for _ in range(100):
        if not _line(stream):
            return bytes(body)
    raise BodyError(400, "too many trailer lines")
