"""Canned meter answers (or failures) at the transport's connection, for its unit tests.

``PoolMock`` replaces ``_MeterConnection.exchange`` while active: each request is matched
by method and URL (path with query) against the registered answers, in order; the last
one registered for a request repeats. An answer is a status with a body, or an exception
raised as ``http.client`` or the socket below it would raise it. Unmatched requests fail
the test. Exact error paths are pinned this way; the integration tests use real sockets.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from lem_dcbm.meter import transport


@dataclass
class Answer:
    """What a matched request gets."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    raises: BaseException | None = None


@dataclass
class Call:
    """A request the transport sent."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]

    def json(self) -> Any:
        """The request body as JSON."""
        return jsonlib.loads(self.body or b"null")


@dataclass
class PoolMock:
    """Registered answers and the calls made; see the module docstring."""

    answers: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def add(
        self,
        method: str,
        url: str,
        *,
        status: int = 200,
        body: str | bytes = b"",
        json: Any = None,
        content_type: str | None = None,
        raises: BaseException | None = None,
    ) -> None:
        """Answer ``method url`` (path with query) so, after any earlier answers for it."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        kind = content_type or "text/plain"
        if json is not None:
            data = jsonlib.dumps(json).encode("utf-8")
            kind = content_type or "application/json"
        answer = Answer(status, data, kind, raises)
        self.answers.setdefault((method.upper(), url), []).append(answer)

    def replace(self, method: str, url: str, **answer: Any) -> None:
        """Drop the answers for ``method url`` and register this one."""
        self.answers.pop((method.upper(), url), None)
        self.add(method, url, **answer)

    def _exchange(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        self.calls.append(Call(method.upper(), url, body, dict(headers)))
        queue = self.answers.get((method.upper(), url))
        if not queue:
            raise AssertionError(f"unexpected request {method} {url}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer.raises is not None:
            raise answer.raises
        # Cut as the connection cuts: one byte past the limit says "larger".
        return answer.status, answer.content_type, answer.body[: transport.MAX_ANSWER_BYTES + 1]


@contextmanager
def mocked_pool() -> Iterator[PoolMock]:
    """A ``PoolMock`` active for every meter connection until the block ends."""
    pool = PoolMock()

    def exchange(
        _self: Any,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        _timeout_s: float,
    ) -> tuple[int, str, bytes]:
        return pool._exchange(method, url, body, headers)

    with mock.patch.object(transport._MeterConnection, "exchange", exchange):
        yield pool
