"""Faults the simulator injects into meter requests on demand (``PUT /_sim/faults``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from lem_dcbm.simulator.refusals import FieldError


@dataclass(frozen=True, kw_only=True)
class Faults:
    """What to do to matching requests; see ``docs/simulator.md``."""

    #: Delay before the request is handled.
    latency_ms: int = 0
    #: Answer with this status and a short JSON error body.
    http_status: int | None = None
    #: Answer 200 with a body that is not JSON.
    malformed_body: bool = False
    #: Close the connection without any answer.
    reset_connection: bool = False
    #: Change one digit of an energy value in served OCMF records, after signing.
    tamper_ocmf: bool = False
    #: Let the meter carry the request out before the answer is replaced or dropped.
    after_processing: bool = False
    #: Serve the record of the last transaction with this id for every OCMF request.
    ocmf_of: str | None = None
    #: Path prefixes the faults apply to; empty means every meter path.
    paths: tuple[str, ...] = ()
    #: HTTP methods the faults apply to; empty means every method.
    methods: tuple[str, ...] = ()
    #: How many matching requests to affect; None until cleared.
    count: int | None = None
    #: How long the faults stay after they were set, ms; None until cleared.
    for_ms: int | None = None

    @property
    def replaces_answer(self) -> bool:
        """True when the meter's own answer is not sent."""
        return self.reset_connection or self.http_status is not None or self.malformed_body

    def matches(self, method: str, path: str) -> bool:
        """True for ``method`` on ``path`` (with its query): one of ``methods`` and ``paths``."""
        if self.methods and method.upper() not in self.methods:
            return False
        return not self.paths or any(path.startswith(prefix) for prefix in self.paths)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_faults(body: Any) -> Faults:
    """Validate a ``PUT /_sim/faults`` body; raise ``FieldError`` naming a bad field."""
    if not isinstance(body, Mapping):
        raise FieldError("body", "the body must be a JSON object")
    known = Faults.__dataclass_fields__
    for key in body:
        if key not in known:
            raise FieldError(key, f"unknown fault {key}")
    latency = body.get("latency_ms", 0)
    if not _is_int(latency) or latency < 0:
        raise FieldError("latency_ms", "latency_ms must be a non-negative integer")
    status = body.get("http_status")
    if status is not None and not (_is_int(status) and 100 <= status <= 599):
        raise FieldError("http_status", "http_status must be an HTTP status or null")
    for flag in ("malformed_body", "reset_connection", "tamper_ocmf", "after_processing"):
        if not isinstance(body.get(flag, False), bool):
            raise FieldError(flag, f"{flag} must be a boolean")
    paths = body.get("paths") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise FieldError("paths", "paths must be a list of path prefixes")
    methods = body.get("methods") or []
    if not isinstance(methods, list) or not all(isinstance(m, str) and m for m in methods):
        raise FieldError("methods", "methods must be a list of HTTP methods")
    count = body.get("count")
    if count is not None and not (_is_int(count) and count > 0):
        raise FieldError("count", "count must be a positive integer or null")
    for_ms = body.get("for_ms")
    if for_ms is not None and not (_is_int(for_ms) and for_ms > 0):
        raise FieldError("for_ms", "for_ms must be a positive integer or null")
    ocmf_of = body.get("ocmf_of")
    if ocmf_of is not None and not (isinstance(ocmf_of, str) and ocmf_of):
        raise FieldError("ocmf_of", "ocmf_of must be a transaction id or null")
    return Faults(
        latency_ms=latency,
        http_status=status,
        malformed_body=body.get("malformed_body", False),
        reset_connection=body.get("reset_connection", False),
        tamper_ocmf=body.get("tamper_ocmf", False),
        after_processing=body.get("after_processing", False),
        ocmf_of=ocmf_of,
        paths=tuple(paths),
        methods=tuple(m.upper() for m in methods),
        count=count,
        for_ms=for_ms,
    )


class FaultBoard:
    """The active faults, shared by all server threads."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._faults: Faults | None = None
        self._until: float | None = None
        self.applied = 0

    def set(self, faults: Faults) -> None:
        """Replace the active faults (``for_ms`` counts from now)."""
        with self._lock:
            self._faults = faults
            self._until = None
            if faults.for_ms is not None:
                self._until = self._monotonic() + faults.for_ms / 1000.0

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults = None

    def take(self, method: str, path: str) -> Faults | None:
        """The faults for ``method`` on ``path``, counting it against ``count``."""
        with self._lock:
            if self._until is not None and self._monotonic() >= self._until:
                self._faults = self._until = None
            faults = self._faults
            if faults is None or not faults.matches(method, path):
                return None
            self.applied += 1
            if faults.count is not None:
                left = faults.count - 1
                self._faults = replace(faults, count=left) if left > 0 else None
            return faults

    def describe(self) -> dict[str, Any] | None:
        """The active faults as JSON, or None."""
        with self._lock:
            if self._faults is None:
                return None
            described = asdict(self._faults)
            described["paths"] = list(self._faults.paths)
            described["methods"] = list(self._faults.methods)
            return described
