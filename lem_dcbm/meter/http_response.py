"""The meter's answer as ``http.client`` reads it, without the e-mail parser for its head.

``http.client.HTTPResponse.begin`` hands the header lines to ``email.parser``, built for
mail: a policy object per header, a feed parser, defects. For the five headers of a
meter's answer read once a second that was about a tenth of the module's Python work
(bench/RESULTS.md). ``MeterResponse`` reads the status line with ``http.client``'s own
code and the header lines under the same limits (``LineTooLong``, at most 100 headers),
into a plain mapping; everything else (chunks, lengths, ``read``) is ``http.client``'s.
The rules of ``begin`` are kept: the first of repeated headers counts, a negative or
unreadable ``Content-Length`` means none, ``chunked`` overrides a length, and an answer
without either ends with the connection.
"""

from __future__ import annotations

import http.client
import io

#: ``http.client``'s limits on the answer's head.
MAX_LINE = 65536
MAX_HEADERS = 100


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

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        """Every value of ``name`` (any case), or ``default``."""
        return self._fields.get(name.lower()) or default

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs, names in lower case."""
        return [(name, value) for name, values in self._fields.items() for value in values]


def read_headers(fp: io.BufferedIOBase) -> Headers:
    """The header lines up to the blank one; folded lines continue the field before.

    As ``http.client`` counts: the blank line is one of the 100 lines a head may have.
    """
    headers = Headers()
    name = ""
    for _ in range(MAX_HEADERS):
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            # An obsolete folded line: more of the previous field's value.
            values = headers.get_all(name) if name else None
            if values:
                values[-1] = f"{values[-1]} {text.strip()}"
            continue
        field, colon, value = text.partition(":")
        if colon and field and field == field.strip():
            name = field
            headers.add(field, value.strip())
    raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")


class MeterResponse(http.client.HTTPResponse):
    """``HTTPResponse`` whose head is read by ``read_headers``."""

    def begin(self) -> None:
        """Read the status line and the head; set up the body's framing."""
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            read_headers(self.fp)  # a 100 Continue's head: skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        headers = read_headers(self.fp)
        self.headers = self.msg = headers
        coding = headers.get("transfer-encoding")
        self.chunked = bool(coding and coding.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200:
            self.length = 0
        if self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
