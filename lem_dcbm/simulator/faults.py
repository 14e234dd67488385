"""Faults the simulator injects into meter requests on demand (``PUT /_sim/faults``)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace

from lem_dcbm.json_types import JsonObject
from lem_dcbm.simulator.refusals import FieldError

#: The methods the server answers; ``methods`` may name only these.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
#: ``GET /v1/ocmf``, ``/v2/ocmf?transactionId=...``, ``/v1/ocmf/{index}``: what ``ocmf_of`` swaps.
_OCMF_PATH = re.compile(r"^/v[12]/ocmf(?:[/?]|$)")


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
    #: Send the answer's body a few bytes at a time, this many milliseconds apart.
    drip_ms: int = 0
    #: Promise more body than is sent (``Content-Length``), then close the connection.
    truncate_body: bool = False
    #: Change one digit of an energy value in served OCMF records, after signing.
    tamper_ocmf: bool = False
    #: Let the meter carry the request out before the answer is replaced or dropped.
    after_processing: bool = False
    #: Serve the last record of this transaction id to every matching OCMF request.
    ocmf_of: str | None = None
    #: Path prefixes the faults apply to; empty means every meter path.
    paths: tuple[str, ...] = ()
    #: HTTP methods the faults apply to; empty means every method.
    methods: tuple[str, ...] = ()
    #: How many matching requests to affect; None until cleared.
    count: int | None = None
    #: Milliseconds the faults stay active after they were set; None until cleared.
    for_ms: int | None = None

    @property
    def replaces_answer(self) -> bool:
        """True when the meter's own answer is not sent."""
        return self.reset_connection or self.http_status is not None or self.malformed_body

    def matches(self, method: str, path: str) -> bool:
        """True for a request with ``method`` to ``path`` (with its query) that these affect."""
        if self.methods and method not in self.methods:
            return False
        if self.ocmf_of is not None and not (method in ("GET", "HEAD") and _OCMF_PATH.match(path)):
            return False
        return not self.paths or any(path.startswith(prefix) for prefix in self.paths)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_or_null(body: Mapping[str, object], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise FieldError(name, f"{name} must be a positive integer or null")
    return value


def _strings(
    body: Mapping[str, object], name: str, allowed: tuple[str, ...] = ()
) -> tuple[str, ...]:
    values = body.get(name) or []
    texts = [v for v in values if isinstance(v, str) and v] if isinstance(values, list) else []
    if texts != values or (allowed and any(v not in allowed for v in texts)):
        what = f"names from {', '.join(allowed)}" if allowed else "path prefixes"
        raise FieldError(name, f"{name} must be a list of {what}")
    return tuple(texts)


def parse_faults(body: object) -> Faults:
    """Validate a ``PUT /_sim/faults`` body; raise ``FieldError`` naming a bad field."""
    if not isinstance(body, Mapping):
        raise FieldError("body", "the body must be a JSON object")
    known = Faults.__dataclass_fields__
    for key in body:
        if key not in known:
            raise FieldError(key, f"unknown fault {key}")
    for name in ("latency_ms", "drip_ms"):
        value = body.get(name, 0)
        if not _is_int(value) or value < 0:
            raise FieldError(name, f"{name} must be a non-negative integer")
    status = body.get("http_status")
    if status is not None and not (_is_int(status) and 100 <= status <= 599):
        raise FieldError("http_status", "http_status must be an HTTP status or null")
    flags = ("malformed_body", "reset_connection", "tamper_ocmf", "after_processing")
    for flag in (*flags, "truncate_body"):
        if not isinstance(body.get(flag, False), bool):
            raise FieldError(flag, f"{flag} must be a boolean")
    ocmf_of = body.get("ocmf_of")
    if ocmf_of is not None and not (isinstance(ocmf_of, str) and ocmf_of):
        raise FieldError("ocmf_of", "ocmf_of must be a transaction id or null")
    return Faults(
        latency_ms=body.get("latency_ms", 0),
        drip_ms=body.get("drip_ms", 0),
        truncate_body=body.get("truncate_body", False),
        http_status=status,
        malformed_body=body.get("malformed_body", False),
        reset_connection=body.get("reset_connection", False),
        tamper_ocmf=body.get("tamper_ocmf", False),
        after_processing=body.get("after_processing", False),
        ocmf_of=ocmf_of,
        paths=_strings(body, "paths"),
        methods=_strings(body, "methods", HTTP_METHODS),
        count=_positive_or_null(body, "count"),
        for_ms=_positive_or_null(body, "for_ms"),
    )


class FaultBoard:
    """The active faults, shared by all server threads.

    ``monotonic`` (seconds) times ``for_ms``; tests pass a manual clock's.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._faults: Faults | None = None
        self._until: float | None = None
        self.applied = 0

    def set(self, faults: Faults) -> None:
        """Replace the active faults; a ``for_ms`` runs from now."""
        with self._lock:
            self._faults = faults
            self._until = None
            if faults.for_ms is not None:
                self._until = self._monotonic() + faults.for_ms / 1000.0

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults = None
            self._until = None

    def _active(self) -> Faults | None:
        """The faults unless their time is up (then cleared); call with the lock held."""
        if self._until is not None and self._monotonic() >= self._until:
            self._faults = None
            self._until = None
        return self._faults

    def take(self, method: str, path: str) -> Faults | None:
        """The faults for a ``method`` request to ``path``, counting it against ``count``."""
        with self._lock:
            faults = self._active()
            if faults is None or not faults.matches(method, path):
                return None
            self.applied += 1
            if faults.count is not None:
                left = faults.count - 1
                self._faults = replace(faults, count=left) if left > 0 else None
                self._until = self._until if left > 0 else None
            return faults

    def describe(self) -> JsonObject | None:
        """The active faults as JSON (with ``remaining_ms`` under ``for_ms``), or None."""
        with self._lock:
            faults = self._active()
            if faults is None:
                return None
            described = asdict(faults)
            described["paths"] = list(faults.paths)
            described["methods"] = list(faults.methods)
            if self._until is not None:
                remaining = (self._until - self._monotonic()) * 1000.0
                described["remaining_ms"] = max(0, round(remaining))
            return described
