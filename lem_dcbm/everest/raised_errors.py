"""Raising and clearing EVerest errors of the powermeter interface.

Each (type, sub_type) is raised at most once until it is cleared, and a clear repeats
the raised error (same uuid and timestamp) with state ``ClearedByModule``, as the
framework's error manager does. Error messages are published even while the broker is
away: paho holds them and sends them after the next connect.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from lem_dcbm.clock import Clock, SystemClock, rfc3339
from lem_dcbm.everest import envelope
from lem_dcbm.everest.topics import Topics

_LOGGER = logging.getLogger(__name__)

#: The errors the interface declares, with the description EVerest defines for each.
ERROR_DESCRIPTIONS = {
    "CommunicationFault": "Communication with the underlying hardware or device has a fault",
    "VendorError": "Vendor specific error code.",
    "VendorWarning": "Vendor specific error code.",
}
NAMESPACES = ("powermeter", "generic")

Publish = Callable[[str, bytes], object]


class ErrorReporter:
    """Keeps the set of active errors of one implementation and publishes changes."""

    def __init__(
        self,
        topics: Topics,
        publish: Publish,
        *,
        namespace: str = "powermeter",
        clock: Clock | None = None,
    ) -> None:
        self._topics = topics
        self._publish = publish
        self._namespace = self._checked(namespace)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], envelope.ErrorRecord] = {}

    @staticmethod
    def _checked(namespace: str) -> str:
        if namespace not in NAMESPACES:
            raise ValueError(f"error namespace must be one of {NAMESPACES}, not {namespace!r}")
        return namespace

    def set_namespace(self, namespace: str) -> None:
        """Switch the namespace (known only once the configuration has arrived)."""
        with self._lock:
            if self._active and namespace != self._namespace:
                # A clear must name the namespace its raise used.
                raise RuntimeError("cannot switch the error namespace while errors are active")
            self._namespace = self._checked(namespace)

    def error_type(self, name: str) -> str:
        """``namespace/name`` of one of the interface's errors."""
        if name not in ERROR_DESCRIPTIONS:
            raise ValueError(f"the powermeter interface declares no error {name!r}")
        return f"{self._namespace}/{name}"

    def is_active(self, name: str, sub_type: str = "") -> bool:
        """True while ``name``/``sub_type`` is raised."""
        with self._lock:
            return (self.error_type(name), sub_type) in self._active

    def raise_error(self, name: str, sub_type: str, message: str, severity: str = "High") -> bool:
        """Raise an error unless it is active already; True when it was published."""
        if severity not in envelope.SEVERITIES:
            raise ValueError(f"severity must be one of {envelope.SEVERITIES}, not {severity!r}")
        error_type = self.error_type(name)
        with self._lock:
            if (error_type, sub_type) in self._active:
                return False
            record = envelope.ErrorRecord(
                type=error_type,
                sub_type=sub_type,
                message=message,
                description=ERROR_DESCRIPTIONS[name],
                module_id=self._topics.module_id,
                implementation_id=self._topics.impl_id,
                severity=severity,
                timestamp=rfc3339(self._clock.utc_now()),
                uuid=str(uuid.uuid4()),
            )
            self._active[(error_type, sub_type)] = record
            # Published under the lock so that a raise and its clear cannot swap places.
            self._publish(self._topics.error(error_type), envelope.raise_error_payload(record))
        _LOGGER.warning("raised %s (%s): %s", error_type, sub_type or "-", message)
        return True

    def clear_error(self, name: str, sub_type: str = "") -> bool:
        """Clear an active error; True when a clear was published."""
        error_type = self.error_type(name)
        with self._lock:
            record = self._active.pop((error_type, sub_type), None)
            if record is None:
                return False
            self._publish(self._topics.error(error_type), envelope.clear_error_payload(record))
        _LOGGER.info("cleared %s (%s)", error_type, sub_type or "-")
        return True
