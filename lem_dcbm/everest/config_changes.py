"""Configuration changes at run time (2026 framework): ``config/set_request`` and its answer.

The 2026 manager persists a change first, then, for a parameter the manifest declares
``mutability: ReadWrite`` and while the modules run, forwards it on
``{prefix}modules/{id}/config/set_request``::

    {"msg_type": "ConfigurationRequest",
     "data": {"identifier": {"module_id": ..., "configuration_parameter_name": ...,
                             "module_implementation_id": ...}, "value": "<text>"}}

and waits for the module's answer on ``.../config/set_response``::

    {"msg_type": "ConfigurationResponse",
     "data": {"status": "Ok", "status_info": <reason>, "type": "Set",
              "response": {"status": "Accepted" | "Rejected" | "RebootRequired",
                           "status_info": <reason>}}}

The manager reads the inner status (framework ``ConfigServiceClient``); the reason goes
in both ``status_info`` fields, as the framework's own client puts it in the outer one.
The 0.25 framework never sends a set request, and would end on a ``msg_type`` it does not
know: under it a stray request is logged and left unanswered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lem_dcbm.core.ports import ConfigChangeHandler
from lem_dcbm.errors import LemDcbmError, shown
from lem_dcbm.everest import envelope
from lem_dcbm.everest.bus import Message
from lem_dcbm.everest.envelope import Generation
from lem_dcbm.everest.topics import Topics

_LOGGER = logging.getLogger(__name__)

SET_STATUSES = ("Accepted", "Rejected", "RebootRequired")
#: The implementation id of module-level parameters (``config_module``).
MODULE_SCOPE = "!module"

#: Longest module id, parameter name or implementation id read (no real one comes near).
MAX_NAME_CHARS = 256


class SetRequestError(LemDcbmError, ValueError):
    """A set request that cannot be read; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class SetRequest:
    """One forwarded change."""

    module_id: str
    name: str
    implementation_id: str
    value: Any


def parse_set_request(payload: bytes) -> SetRequest:
    """Read a forwarded set request; raise ``SetRequestError`` naming what is wrong."""
    try:
        received = envelope.decode(payload)
    except envelope.EnvelopeError as exc:
        raise SetRequestError(str(exc)) from exc
    if received.msg_type != Generation.FRAMEWORK_2026.request_type:
        raise SetRequestError(f"msg_type {shown(received.msg_type)} is not ConfigurationRequest")
    data = received.data
    identifier = data.get("identifier") if isinstance(data, dict) else None
    if not isinstance(identifier, dict):
        raise SetRequestError("no 'identifier' object in data")
    if not isinstance(data, dict) or "value" not in data:
        raise SetRequestError("no 'value' in data")
    module_id = identifier.get("module_id")
    name = identifier.get("configuration_parameter_name")
    implementation_id = identifier.get("module_implementation_id", MODULE_SCOPE)
    for field, value in (
        ("module_id", module_id),
        ("configuration_parameter_name", name),
        ("module_implementation_id", implementation_id),
    ):
        if not isinstance(value, str) or not value:
            raise SetRequestError(f"identifier.{field} is not a non-empty string")
        if len(value) > MAX_NAME_CHARS:
            raise SetRequestError(f"identifier.{field} is longer than {MAX_NAME_CHARS} characters")
    return SetRequest(str(module_id), str(name), str(implementation_id), data["value"])


def set_response_payload(status: str, reason: str = "") -> bytes:
    """The answer to a set request that was read."""
    if status not in SET_STATUSES:
        raise ValueError(f"status must be one of {SET_STATUSES}, got {status!r}")
    return envelope.encode(
        Generation.FRAMEWORK_2026.response_type,
        {
            "status": "Ok",
            "status_info": reason,
            "type": "Set",
            "response": {"status": status, "status_info": reason},
        },
    )


def set_error_payload(reason: str) -> bytes:
    """The answer to a set request that could not be read (as the framework's client sends)."""
    return envelope.encode(
        Generation.FRAMEWORK_2026.response_type,
        {
            "status": "Error",
            "status_info": reason,
            "type": "Set",
            "response": {"status": "Rejected", "status_info": ""},
        },
    )


class ConfigChanges:
    """Answers the manager's set requests for one module with a ``ConfigChangeHandler``."""

    def __init__(
        self,
        topics: Topics,
        publish: Callable[[str, bytes], object],
        generation: Callable[[], Generation | None],
    ) -> None:
        self._topics = topics
        self._publish = publish
        self._generation = generation
        self._handler: ConfigChangeHandler | None = None

    def serve(self, handler: ConfigChangeHandler) -> None:
        """Answer set requests with ``handler`` from now on."""
        self._handler = handler

    def on_request(self, message: Message) -> None:
        """Handle one message on ``config/set_request`` (bus dispatch thread)."""
        if message.retain or not message.payload:
            return  # a change is never retained; replaying one would undo later ones
        if self._generation() is Generation.FRAMEWORK_0_25:
            _LOGGER.warning(
                "ignored a set request on %s: the 0.25 framework has no runtime changes",
                message.topic,
            )
            return
        try:
            request = parse_set_request(message.payload)
        except SetRequestError as exc:
            _LOGGER.warning("could not read a set request on %s: %s", message.topic, exc)
            self._answer(set_error_payload(f"could not read the set request: {exc}"))
            return
        status, reason = self._decide(request)
        if status != "Accepted":
            _LOGGER.info("set request for %s answered %s: %s", request.name, status, reason)
        self._answer(set_response_payload(status, reason))

    def _decide(self, request: SetRequest) -> tuple[str, str]:
        if request.module_id != self._topics.module_id:
            return "Rejected", f"this is module {self._topics.module_id}, not {request.module_id}"
        if request.implementation_id != MODULE_SCOPE:
            return (
                "Rejected",
                f"implementation {request.implementation_id} has no parameter {request.name}; "
                "every parameter of this module is module-level",
            )
        if self._handler is None:
            return "Rejected", "the module is still starting; its configuration is not in use yet"
        try:
            return self._handler(request.name, request.value)
        except Exception as exc:  # noqa: BLE001 - the manager must get an answer
            _LOGGER.exception("applying a change of %s failed", request.name)
            return "Rejected", f"applying the change failed: {exc}"

    def _answer(self, payload: bytes) -> None:
        self._publish(self._topics.config_set_response, payload)
