"""What the API cannot carry: the error policy's conditions, kept and published by the module.

The powermeter API has no VendorError or VendorWarning path; EVerest learns of trouble only
when the module's ``communication_check`` stops (the bridge then raises
``powermeter/CommunicationFault``). So the module keeps every condition the error policy
would raise on a board of its own and:

- logs each one once when it appears and once when it clears;
- publishes the whole board, retained, on ``{external prefix}lem_dcbm/{module}/status``;
- treats ``CommunicationFault`` and ``VendorError`` (the meter unreachable, a blocking or
  failure bit, tampering, a temperature error: billing is impossible) as a reason to
  refuse starts and to withhold the communication check, which makes EVerest stop
  charging just as those errors do in the module protocol. ``VendorWarning`` conditions
  (billing still possible) are reported only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lem_dcbm.clock import Clock, rfc3339
from lem_dcbm.json_types import JsonMapping, JsonObject

#: File name of the JSON Schema of the status message, in this package.
SCHEMA_FILE = "status.schema.json"

_LOGGER = logging.getLogger(__name__)

#: Version of the status message layout; a change that breaks readers raises it.
STATUS_VERSION = 1
#: The conditions under which the meter cannot bill (the module protocol stops charging).
BILLING_FATAL = frozenset({"CommunicationFault", "VendorError"})

Publish = Callable[[JsonMapping], object]


@dataclass(frozen=True)
class Condition:
    """One raised condition: the error it would be in the module protocol, and why."""

    error: str
    sub_type: str
    message: str
    severity: str
    since: str

    def to_json(self) -> dict[str, str]:
        """The condition as it appears in the status message."""
        return {
            "error": self.error,
            "sub_type": self.sub_type,
            "message": self.message,
            "severity": self.severity,
            "since": self.since,
        }


class ConditionBoard:
    """The active conditions and EVerest's heartbeat, published on every change."""

    def __init__(self, module_id: str, publish: Publish, clock: Clock) -> None:
        self._module_id = module_id
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], Condition] = {}
        self._heartbeat = "unknown"

    # --- the error policy's side (EverestOutputs) --------------------------------------

    def raise_error(self, name: str, sub_type: str, message: str, severity: str = "High") -> None:
        """Keep the condition (idempotent), log it once and publish the board."""
        with self._lock:
            if (name, sub_type) in self._active:
                return
            since = rfc3339(self._clock.utc_now())
            self._active[(name, sub_type)] = Condition(name, sub_type, message, severity, since)
            document = self._document()
        fatal = name in BILLING_FATAL
        (_LOGGER.error if fatal else _LOGGER.warning)(
            "module %s: %s%s: %s (%s)",
            self._module_id,
            name,
            f"/{sub_type}" if sub_type else "",
            message,
            "billing impossible: starts refused, communication check withheld"
            if fatal
            else "billing still possible",
        )
        self._publish(document)

    def clear_error(self, name: str, sub_type: str) -> None:
        """Forget the condition if kept, log that once and publish the board."""
        with self._lock:
            if self._active.pop((name, sub_type), None) is None:
                return
            document = self._document()
        _LOGGER.info(
            "module %s: %s%s cleared", self._module_id, name, f"/{sub_type}" if sub_type else ""
        )
        self._publish(document)

    # --- what the adapter asks ------------------------------------------------------

    def billing_blockers(self) -> list[Condition]:
        """The active conditions under which the meter cannot bill."""
        with self._lock:
            return [c for c in self._active.values() if c.error in BILLING_FATAL]

    def refusal(self) -> str | None:
        """Why a start is refused now, or None when billing is possible."""
        blockers = self.billing_blockers()
        if not blockers:
            return None
        named = "; ".join(
            f"{c.error}{'/' + c.sub_type if c.sub_type else ''}: {c.message}" for c in blockers
        )
        return f"billing is impossible now ({named})"

    def set_heartbeat(self, state: str) -> None:
        """Note EVerest's heartbeat as ``ok`` or ``missing`` and publish the board."""
        with self._lock:
            if state == self._heartbeat:
                return
            self._heartbeat = state
            document = self._document()
        self._publish(document)

    def document(self) -> JsonObject:
        """The status message as it would be published now."""
        with self._lock:
            return self._document()

    def offline_document(self) -> JsonObject:
        """The status of a module that is gone (its last will, and its last word at exit)."""
        return {
            "version": STATUS_VERSION,
            "module_id": self._module_id,
            "online": False,
            "billing_possible": False,
            "everest_heartbeat": "unknown",
            "conditions": [],
            "updated_at": None,
        }

    def _document(self) -> JsonObject:
        conditions = list(self._active.values())  # in the order they were raised
        return {
            "version": STATUS_VERSION,
            "module_id": self._module_id,
            "online": True,
            "billing_possible": not any(c.error in BILLING_FATAL for c in conditions),
            "everest_heartbeat": self._heartbeat,
            "conditions": [c.to_json() for c in conditions],
            "updated_at": rfc3339(self._clock.utc_now()),
        }


def status_schema() -> JsonObject:
    """The JSON Schema of the status message, as shipped in the package."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
