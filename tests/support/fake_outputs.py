"""Records what the core tells EVerest, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lem_dcbm.core.results import PowermeterValue
from lem_dcbm.everest.shapes import powermeter_var


@dataclass
class RecordingOutputs:
    """An ``EverestOutputs`` that keeps every call as (kind, payload)."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def publish_powermeter(self, value: PowermeterValue) -> None:
        self.events.append(("powermeter", powermeter_var(value)))

    def publish_public_key_ocmf(self, key: str) -> None:
        self.events.append(("public_key_ocmf", key))

    def raise_error(self, name: str, sub_type: str, message: str, severity: str = "High") -> None:
        self.events.append(("raise", (name, sub_type)))

    def clear_error(self, name: str, sub_type: str) -> None:
        self.events.append(("clear", (name, sub_type)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]
