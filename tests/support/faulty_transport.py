"""A transport in front of the in-process simulated meter that misbehaves on demand.

Each rule matches a method and a path prefix and says what goes wrong: no answer
(``reset``, ``timeout``), an HTTP status, an unreadable body, a delay on the clock, a
gate that holds the request until the test opens it, another transaction's record, or a
tampered one.
``after=True`` lets the meter carry the request out first, as when an answer is lost on
its way back. Rules end after ``count`` requests or at ``until`` (monotonic, on the
test's clock).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lem_dcbm.clock import Clock
from lem_dcbm.errors import MeterConnectionError
from lem_dcbm.simulator.ocmf_signer import tamper_record
from tests.support.device_transport import DeviceTransport


@dataclass
class Rule:
    """One misbehaviour; see the module docstring."""

    method: str
    path: str
    kind: str  #: reset | timeout | status | malformed | delay | gate | ocmf_of | tamper
    status: int = 500
    after: bool = False
    count: int | None = None
    until: float | None = None
    delay_s: float = 0.0
    ocmf_of: str = ""
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    hits: int = 0


class FaultyTransport:
    """``DeviceTransport`` with rules; ``calls`` logs (method, path) of every request."""

    def __init__(self, inner: DeviceTransport, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.rules: list[Rule] = []
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, rule: Rule) -> Rule:
        """Activate ``rule`` and return it (gates are opened through it)."""
        with self._lock:
            self.rules.append(rule)
        return rule

    def _take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            now = self.clock.monotonic()
            for rule in list(self.rules):
                if rule.until is not None and now >= rule.until:
                    self.rules.remove(rule)
                    continue
                if rule.method == method and path.startswith(rule.path):
                    rule.hits += 1
                    if rule.count is not None and rule.hits >= rule.count:
                        self.rules.remove(rule)
                    return rule
            return None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        """Answer as the meter would, unless a rule says otherwise."""
        self.calls.append((method, path))
        rule = self._take(method, path)
        if rule is None:
            return self.inner.request(method, path, json_body=json_body, params=params)
        if rule.kind == "gate":
            rule.entered.set()
            rule.release.wait(10)
            return self.inner.request(method, path, json_body=json_body, params=params)
        if rule.kind == "delay":
            self.clock.sleep(rule.delay_s)
            return self.inner.request(method, path, json_body=json_body, params=params)
        if rule.kind == "tamper":
            status, body = self.inner.request(method, path, json_body=json_body, params=params)
            return status, tamper_record(body)
        if rule.kind == "ocmf_of":
            split = path.split("?", 1)[0]
            return self.inner.request("GET", f"{split}?transactionId={rule.ocmf_of}")
        if rule.after:
            self.inner.request(method, path, json_body=json_body, params=params)
        if rule.kind == "reset":
            raise MeterConnectionError(method, path, "connection failed: ConnectionResetError")
        if rule.kind == "timeout":
            self.clock.sleep(timeout_s or 5.0)
            raise MeterConnectionError(method, path, "timed out")
        if rule.kind == "malformed":
            return 200, "<html>busy</html>"
        return rule.status, '{"error": "injected"}'

    def close(self) -> None:
        """Nothing to close."""
