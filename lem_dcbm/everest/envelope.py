"""EVerest message envelopes: ``{"msg_type": ..., "data": ...}``, built and parsed.

Pure data in, data out. Serialised the way the framework does (compact, keys sorted,
UTF-8 unescaped), so that what this module sends is byte-for-byte what an EVerest
module of the same content would send.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lem_dcbm.bounded_json import MAX_JSON_DEPTH, TooDeep, loads_bounded, nesting_depth
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.json_types import JsonObject

VAR = "Var"
CMD = "Cmd"
CMD_RESULT = "CmdResult"
RAISE_ERROR = "RaiseError"
CLEAR_ERROR = "ClearError"
MODULE_READY = "ModuleReady"
GLOBAL_READY = "GlobalReady"

#: Kinds of protocol failure a command result can carry instead of a ``retval``.
CMD_ERROR_TYPES = (
    "MessageParsingError",
    "SchemaValidationError",
    "HandlerException",
    "CmdTimeout",
    "Shutdown",
    "NotReady",
)

#: EVerest module and implementation ids; an origin must be one to be routable.
MODULE_ID_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")


class Generation(Enum):
    """Framework generations; they differ only in the configuration message names.

    Both frameworks end the process that receives a ``msg_type`` they do not know, so
    the module must never send the other generation's names.
    """

    FRAMEWORK_2026 = "2026"
    FRAMEWORK_0_25 = "0.25"

    @property
    def request_type(self) -> str:
        """``msg_type`` of a configuration request."""
        return "ConfigurationRequest" if self is Generation.FRAMEWORK_2026 else "GetConfig"

    @property
    def response_type(self) -> str:
        """``msg_type`` of configuration responses and of the module metadata."""
        if self is Generation.FRAMEWORK_2026:
            return "ConfigurationResponse"
        return "GetConfigResponse"

    @classmethod
    def from_response_type(cls, msg_type: object) -> Generation | None:
        """The generation whose response ``msg_type`` this is, or None."""
        for generation in cls:
            if generation.response_type == msg_type:
                return generation
        return None


class EnvelopeError(LemDcbmError, ValueError):
    """A payload is not an EVerest envelope; ``str()`` says why."""


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope."""

    msg_type: str
    data: Any


def encode(msg_type: str, data: object) -> bytes:
    """Serialise an envelope as the framework does."""
    return dumps({"msg_type": msg_type, "data": data})


def dumps(value: object) -> bytes:
    """Compact JSON with sorted keys, UTF-8.

    A string that is not valid Unicode (a lone surrogate, which JSON's ``\\ud800`` escape
    can carry in) cannot be UTF-8: such a value is written with ASCII escapes instead, so
    an answer is never lost to an encoding error.
    """
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode(payload: bytes) -> Envelope:
    """Parse a payload into an ``Envelope``; raise ``EnvelopeError`` when it is none."""
    try:
        document = loads_bounded(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            f"payload is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    except TooDeep as exc:
        raise EnvelopeError(f"payload is {exc}") from exc
    except ValueError as exc:
        raise EnvelopeError(f"payload is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise EnvelopeError(f"payload is a JSON {_json_kind(document)}, not an object")
    msg_type = document.get("msg_type")
    if not isinstance(msg_type, str) or "data" not in document:
        raise EnvelopeError("payload has no envelope (no 'msg_type' string and 'data')")
    return Envelope(msg_type, document["data"])


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


# --- variables and commands -------------------------------------------------------


def var_payload(value: object) -> bytes:
    """A variable publication: the value sits in ``data.data``."""
    return encode(VAR, {"data": value})


def cmd_payload(call_id: str, args: dict[str, object], origin: str) -> bytes:
    """A command call as a consumer module sends it."""
    return encode(CMD, {"id": call_id, "args": args, "origin": origin})


def result_payload(call_id: str, origin: str, retval: object) -> bytes:
    """A successful command result."""
    return encode(
        CMD_RESULT, {"type": "result", "data": {"id": call_id, "origin": origin, "retval": retval}}
    )


def error_result_payload(
    call_id: str,
    origin: str,
    error_type: str,
    message: str,
    *,
    retval: object = None,
    with_retval: bool = False,
) -> bytes:
    """A failed command result; ``with_retval`` keeps a result that failed validation."""
    if error_type not in CMD_ERROR_TYPES:
        raise ValueError(f"unknown command error type {error_type!r}")
    data: dict[str, Any] = {
        "id": call_id,
        "origin": origin,
        "error": {"__everest__error_type": error_type, "__everest__error_msg": message},
    }
    if with_retval:
        data["retval"] = retval
    return encode(CMD_RESULT, {"type": "result", "data": data})


@dataclass(frozen=True)
class CommandRequest:
    """A parsed command call."""

    call_id: str
    origin: str
    args: dict[str, Any]


class CommandParseError(LemDcbmError, ValueError):
    """A command payload that cannot be executed.

    ``call_id`` and ``origin`` are set when the payload still names both, so the error
    can be answered; otherwise it can only be logged.
    """

    def __init__(
        self,
        error_type: str,
        message: str,
        call_id: str | None = None,
        origin: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.call_id = call_id
        self.origin = origin

    @property
    def routable(self) -> bool:
        """True when a response can be addressed to the caller."""
        return self.call_id is not None and self.origin is not None


def _routing(document: object) -> tuple[str | None, str | None]:
    """Best-effort id and origin of a damaged request, from ``data`` or the top level."""
    if not isinstance(document, dict):
        return None, None
    inner = document.get("data")
    source = inner if isinstance(inner, dict) else document
    call_id = source.get("id")
    origin = source.get("origin")
    good_id = call_id if isinstance(call_id, str) and call_id else None
    good_origin = origin if isinstance(origin, str) and MODULE_ID_PATTERN.match(origin) else None
    return good_id, good_origin


def parse_command(payload: bytes) -> CommandRequest:
    """Parse a ``Cmd`` payload; raise ``CommandParseError`` with whatever routing it has."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only to find where to send the error: the request itself is refused.
        salvaged = _loads_or_none(payload.decode("utf-8", errors="replace"))
        raise CommandParseError(
            "MessageParsingError",
            f"payload is not valid UTF-8 ({exc.reason} at byte {exc.start})",
            *_routing(salvaged),
        ) from exc
    depth = nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        # Not parsed at all (deep nesting exhausts the parser); routed from the raw text.
        raise CommandParseError(
            "MessageParsingError",
            f"payload is nested {depth} levels deep, more than the {MAX_JSON_DEPTH} allowed",
            *_salvaged_routing(text),
        )
    document = _loads_or_none(text)
    if document is None and text.strip() != "null":
        raise CommandParseError("MessageParsingError", "payload is not JSON")
    if not isinstance(document, dict):
        raise CommandParseError(
            "MessageParsingError", f"payload is a JSON {_json_kind(document)}, not an object"
        )
    call_id, origin = _routing(document)
    if "msg_type" not in document or "data" not in document:
        raise CommandParseError(
            "MessageParsingError",
            'payload has no envelope: expected {"msg_type": "Cmd", "data": {...}}',
            call_id,
            origin,
        )
    if document["msg_type"] != CMD:
        raise CommandParseError(
            "MessageParsingError",
            f"msg_type {document['msg_type']!r} is not {CMD!r}",
            call_id,
            origin,
        )
    data = document["data"]
    if not isinstance(data, dict):
        raise CommandParseError("MessageParsingError", "'data' is not an object")
    if call_id is None or origin is None:
        missing = [name for name, value in (("id", call_id), ("origin", origin)) if value is None]
        raise CommandParseError(
            "MessageParsingError",
            f"request without a usable {' and '.join(repr(m) for m in missing)}",
            call_id,
            origin,
        )
    if "args" not in data:
        raise CommandParseError("MessageParsingError", "request has no 'args'", call_id, origin)
    args = data["args"]
    if not isinstance(args, dict):
        raise CommandParseError(
            "MessageParsingError",
            f"'args' is a JSON {_json_kind(args)}, not an object",
            call_id,
            origin,
        )
    return CommandRequest(call_id, origin, args)


def _loads_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


# Bounded so that a hostile text cannot make the search slow: about 4 000 characters of
# string literal, far above an id of 60 astral characters (720 characters as escapes).
_JSON_STRING = r'"(?:[^"\\]|\\.){1,4096}"'


def _salvaged_routing(text: str) -> tuple[str | None, str | None]:
    """The id and origin of a request too damaged to parse, found in its text."""
    call_id = salvaged_string(text, "id")
    origin = salvaged_string(text, "origin")
    good_origin = origin if origin and MODULE_ID_PATTERN.match(origin) else None
    return call_id or None, good_origin


def salvaged_string(text: str, key: str) -> str | None:
    """The first string member ``key`` in JSON text too damaged or deep to parse, decoded."""
    match = re.search('"' + re.escape(key) + r'"\s*:\s*(' + _JSON_STRING + ")", text)
    if match is None:
        return None
    value = _loads_or_none(match.group(1))
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class CommandResult:
    """A parsed command result (what a consumer receives)."""

    call_id: str
    origin: str
    retval: Any
    has_retval: bool
    error_type: str | None
    error_message: str | None


def parse_result(payload: bytes) -> CommandResult:
    """Parse a ``CmdResult`` payload; raise ``EnvelopeError`` when it is not one."""
    envelope = decode(payload)
    if envelope.msg_type != CMD_RESULT:
        raise EnvelopeError(f"msg_type {envelope.msg_type!r} is not {CMD_RESULT!r}")
    outer = envelope.data
    if not isinstance(outer, dict) or outer.get("type") != "result":
        raise EnvelopeError("CmdResult data is not {'type': 'result', 'data': ...}")
    data = outer.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise EnvelopeError("CmdResult without an id")
    error = data.get("error")
    error_type = error.get("__everest__error_type") if isinstance(error, dict) else None
    error_message = error.get("__everest__error_msg") if isinstance(error, dict) else None
    return CommandResult(
        call_id=data["id"],
        origin=str(data.get("origin", "")),
        retval=data.get("retval"),
        has_retval="retval" in data,
        error_type=error_type,
        error_message=error_message,
    )


# --- errors ----------------------------------------------------------------------

#: Severities the framework knows.
SEVERITIES = ("High", "Medium", "Low")


@dataclass(frozen=True)
class ErrorRecord:
    """One raised error; a clear repeats it with state ``ClearedByModule``."""

    type: str
    sub_type: str
    message: str
    description: str
    module_id: str
    implementation_id: str
    severity: str
    timestamp: str
    uuid: str
    vendor_id: str = ""
    state: str = field(default="Active")

    def to_data(self) -> JsonObject:
        """The error object as it appears in ``data``."""
        return {
            "type": self.type,
            "sub_type": self.sub_type,
            "message": self.message,
            "description": self.description,
            "origin": {"module_id": self.module_id, "implementation_id": self.implementation_id},
            "severity": self.severity,
            "timestamp": self.timestamp,
            "uuid": self.uuid,
            "state": self.state,
            "vendor_id": self.vendor_id,
        }


def raise_error_payload(record: ErrorRecord) -> bytes:
    """The ``RaiseError`` message for ``record`` (state ``Active``)."""
    data = record.to_data()
    data["state"] = "Active"
    return encode(RAISE_ERROR, data)


def clear_error_payload(record: ErrorRecord) -> bytes:
    """The ``ClearError`` message for a previously raised ``record``."""
    data = record.to_data()
    data["state"] = "ClearedByModule"
    return encode(CLEAR_ERROR, data)


# --- start-up with the manager -----------------------------------------------------


def config_request_payload(module_id: str, generation: Generation) -> bytes:
    """The module's request for its configuration."""
    data = {"type": "Get", "origin": module_id, "request": {"type": "Module"}}
    return encode(generation.request_type, data)


def metadata_payload(module_name: str, provides: dict[str, str], generation: Generation) -> bytes:
    """The module's metadata: its name and the interface of each implementation."""
    data = {
        "module": module_name,
        "provides": {impl: {"interface": interface} for impl, interface in provides.items()},
    }
    return encode(generation.response_type, data)


def module_ready_payload() -> bytes:
    """The module's readiness signal."""
    return encode(MODULE_READY, True)


def global_ready_payload() -> bytes:
    """The manager's signal that every module is ready."""
    return encode(GLOBAL_READY, True)


@dataclass(frozen=True)
class ConfigResponse:
    """The manager's answer to a configuration request."""

    generation: Generation
    module_name: str | None
    parameters: list[dict[str, Any]]


def parse_config_response(envelope: Envelope) -> ConfigResponse:
    """Extract the module's own parameters; raise ``EnvelopeError`` on any other answer."""
    generation = Generation.from_response_type(envelope.msg_type)
    if generation is None:
        raise EnvelopeError(f"msg_type {envelope.msg_type!r} is not a configuration response")
    data = envelope.data
    if not isinstance(data, dict):
        raise EnvelopeError("configuration response data is not an object")
    if data.get("status") != "Ok":
        raise EnvelopeError(
            f"the manager refused the configuration request: status {data.get('status')!r}, "
            f"{data.get('status_info')!r}"
        )
    try:
        module_config = data["response"]["data"]["module_config"]
        parameters = module_config["configuration_parameters"].get("!module", [])
    except (KeyError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"configuration response lacks {exc}") from exc
    if not isinstance(parameters, list):
        raise EnvelopeError("configuration_parameters['!module'] is not a list")
    name = module_config.get("module_name")
    return ConfigResponse(generation, name if isinstance(name, str) else None, parameters)
