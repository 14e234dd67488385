"""EVerest topic names, computed from the prefix, the module id and the implementation id.

Pure functions over a frozen ``Topics`` value: no broker, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from lem_dcbm.config import normalize_prefix


@dataclass(frozen=True)
class Topics:
    """Every topic one module implementation uses."""

    prefix: str
    module_id: str
    impl_id: str = "main"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalize_prefix(self.prefix))

    @property
    def module_base(self) -> str:
        """``{prefix}modules/{module_id}``."""
        return f"{self.prefix}modules/{self.module_id}"

    @property
    def impl_base(self) -> str:
        """``{prefix}modules/{module_id}/impl/{impl_id}``."""
        return f"{self.module_base}/impl/{self.impl_id}"

    def var(self, name: str) -> str:
        """Topic a variable is published on."""
        return f"{self.impl_base}/var/{name}"

    def cmd(self, name: str) -> str:
        """Topic the module receives calls of command ``name`` on."""
        return f"{self.impl_base}/cmd/{name}"

    def cmd_response(self, name: str, origin: str) -> str:
        """Topic the result of command ``name`` for caller ``origin`` goes to."""
        return f"{self.cmd(name)}/response/{origin}"

    def error(self, error_type: str) -> str:
        """Topic an error is raised and cleared on; ``error_type`` is ``namespace/Name``."""
        return f"{self.impl_base}/error/{error_type}"

    @property
    def config_request(self) -> str:
        """Where a module asks the manager for its configuration."""
        return f"{self.prefix}config/request"

    @property
    def config_response(self) -> str:
        """Where the manager answers this module's configuration request."""
        return f"{self.module_base}/response"

    @property
    def config_set_request(self) -> str:
        """Where the manager (2026 framework) forwards a runtime configuration change."""
        return f"{self.module_base}/config/set_request"

    @property
    def config_set_response(self) -> str:
        """Where the module answers a runtime configuration change."""
        return f"{self.module_base}/config/set_response"

    @property
    def metadata(self) -> str:
        """Where the module announces its name and implementations."""
        return f"{self.module_base}/metadata"

    @property
    def module_ready(self) -> str:
        """Where the module says it is ready."""
        return f"{self.module_base}/ready"

    @property
    def global_ready(self) -> str:
        """Where the manager says every module is ready."""
        return f"{self.prefix}ready"

    @property
    def shutdown(self) -> str:
        """Where the manager (2026 framework) asks every module to shut down."""
        return f"{self.prefix}shutdown"

    @property
    def settings(self) -> str:
        """Retained manager settings; its ``msg_type`` tells the framework generation."""
        return f"{self.prefix}settings"

    def command_name(self, topic: str) -> str | None:
        """The command a request topic addresses, or None for any other topic."""
        head = f"{self.impl_base}/cmd/"
        if not topic.startswith(head):
            return None
        name = topic[len(head) :]
        return name if name and "/" not in name else None
