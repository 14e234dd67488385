"""Canned meter answers (or failures) at urllib3's connection pool, for the transport's unit tests.

``PoolMock`` replaces ``HTTPConnectionPool.urlopen`` while active: each request is matched
by method and URL (path with query) against the registered answers, in order; the last
one registered for a request repeats. An answer is a status with a body, or an exception
raised as urllib3 would raise it. Unmatched requests fail the test. Exact error paths are
pinned this way; the integration tests use real sockets.
"""

from __future__ import annotations

import io
import json as jsonlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import urllib3
from urllib3.response import HTTPResponse


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

    def _urlopen(self, method: str, url: str, body: bytes | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.get("headers") or {})
        self.calls.append(Call(method.upper(), url, body, headers))
        queue = self.answers.get((method.upper(), url))
        if not queue:
            raise AssertionError(f"unexpected request {method} {url}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer.raises is not None:
            raise answer.raises
        return HTTPResponse(
            body=io.BytesIO(answer.body),
            status=answer.status,
            headers={"Content-Type": answer.content_type},
            preload_content=False,
        )


@contextmanager
def mocked_pool() -> Iterator[PoolMock]:
    """A ``PoolMock`` active for every urllib3 pool until the block ends."""
    pool = PoolMock()

    def urlopen(_self: Any, method: str, url: str, body: Any = None, **kwargs: Any) -> Any:
        return pool._urlopen(method, url, body, **kwargs)

    with mock.patch.object(urllib3.HTTPConnectionPool, "urlopen", urlopen):
        yield pool
