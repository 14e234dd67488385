"""Request bodies by Content-Length or chunked, read exactly to their end."""

from __future__ import annotations

import io
from email.message import Message

import pytest

from lem_dcbm.simulator.http_body import BodyError, read_body


def headers(**fields: str) -> Message:
    message = Message()
    for name, value in fields.items():
        message[name.replace("_", "-")] = value
    return message


def test_no_length_and_no_coding_is_an_empty_body() -> None:
    assert read_body(headers(), io.BytesIO(b"GET / HTTP/1.1\r\n")) == b""


def test_content_length_reads_exactly_that_much() -> None:
    stream = io.BytesIO(b'{"a": 1}GET /next')
    assert read_body(headers(Content_Length="8"), stream) == b'{"a": 1}'
    assert stream.read() == b"GET /next"


def test_chunked_with_extensions_trailers_and_upper_case_hex() -> None:
    data = b'3;x=y\r\n{"a\r\nA\r\n": 1234567\r\n1\r\n}\r\n0\r\nTrailer: t\r\n\r\nNEXT'
    stream = io.BytesIO(data)
    body = read_body(headers(Transfer_Encoding="Chunked"), stream)
    assert body == b'{"a": 1234567}'
    assert stream.read() == b"NEXT"


def test_chunked_accepts_bare_newlines() -> None:
    stream = io.BytesIO(b"2\n{}\n0\n\n")
    assert read_body(headers(Transfer_Encoding="chunked"), stream) == b"{}"


@pytest.mark.parametrize(
    ("fields", "data", "status", "words"),
    [
        ({"Transfer_Encoding": "chunked"}, b"g\r\n", 400, "chunk size"),
        ({"Transfer_Encoding": "chunked"}, b"-2\r\n{}\r\n0\r\n\r\n", 400, "chunk size"),
        ({"Transfer_Encoding": "chunked"}, b"+2\r\n{}\r\n0\r\n\r\n", 400, "chunk size"),
        ({"Transfer_Encoding": "chunked"}, b"2\r\n{}", 400, "ended"),
        ({"Transfer_Encoding": "chunked"}, b"5\r\n{}", 400, "ended inside a chunk"),
        ({"Transfer_Encoding": "chunked"}, b"2\r\n{}}\r\n0\r\n\r\n", 400, "longer"),
        ({"Transfer_Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n", 400, "ended"),
        ({"Transfer_Encoding": "chunked"}, b"1" * 2000 + b"\r\n", 400, "too long"),
        ({"Transfer_Encoding": "chunked"}, b"0\r\n" + b"T: x\r\n" * 101, 400, "trailer"),
        ({"Transfer_Encoding": "chunked"}, b"8001\r\n", 413, "exceeds"),
        ({"Transfer_Encoding": "chunked", "Content_Length": "2"}, b"", 400, "both"),
        ({"Transfer_Encoding": "gzip, chunked"}, b"", 501, "not supported"),
        ({"Content_Length": "-1"}, b"", 400, "not a number"),
        ({"Content_Length": "8"}, b"{}", 400, "ended inside the body"),
        ({"Content_Length": "40000"}, b"", 413, "exceeds"),
    ],
)
def test_a_bad_body_names_the_problem(
    fields: dict[str, str], data: bytes, status: int, words: str
) -> None:
    with pytest.raises(BodyError) as refused:
        read_body(headers(**fields), io.BytesIO(data), limit=32 * 1024)
    assert refused.value.status == status
    assert words in refused.value.message
