"""The payloads of the powermeter API, read and written as the AsyncAPI definition says.

A request is ``{"headers": {"replyTo": topic}, "payload": ...}`` (the framework's
``RequestReply`` codec); the reply goes to ``replyTo`` as the bare reply object. A
start's payload is a ``StartTransactionRequest``, the very fields of the interface's
``TransactionReq`` (the API also allows other members, which are ignored, as the
framework's codec does). Nothing here raises anything but :class:`RequestError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lem_dcbm.bounded_json import MAX_JSON_DEPTH, nesting_depth
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest import envelope, validation
from lem_dcbm.json_types import JsonObject

#: The longest topic MQTT allows, in bytes.
MAX_TOPIC_BYTES = 65535
#: Requests nested deeper are not decoded (the API's deepest has 4 levels): the limit of
#: the module protocol, far from Python's recursion limit, so the outcome never depends on
#: the thread's stack. Their ``replyTo`` is looked for in the text, to say so.
MAX_DEPTH = MAX_JSON_DEPTH
#: The members of a ``StartTransactionRequest`` the module reads.
START_FIELDS = (
    "evse_id",
    "transaction_id",
    "identification_status",
    "identification_level",
    "identification_flags",
    "identification_type",
    "identification_data",
    "tariff_text",
)


class RequestError(LemDcbmError):
    """A request the module cannot carry out; ``reply_to`` is where to say so, if anywhere."""

    def __init__(self, reason: str, reply_to: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply_to = reply_to


@dataclass(frozen=True)
class ApiRequest:
    """A decoded request: where to answer (None: nowhere) and its ``payload`` member."""

    reply_to: str | None
    payload: Any


def reply_topic(headers: object) -> str | None:
    """``headers.replyTo`` when it names a topic one can publish to, else None."""
    if not isinstance(headers, dict):
        return None
    topic = headers.get("replyTo")
    if not isinstance(topic, str) or not topic or any(c in topic for c in "+#\x00"):
        return None
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no broker takes it
        return None
    return topic if size <= MAX_TOPIC_BYTES else None


def parse_request(raw: bytes) -> ApiRequest:
    """Decode a request; raise ``RequestError`` (with the reply topic if known)."""
    try:
        text = raw.decode("utf-8")
        if nesting_depth(text) > MAX_DEPTH:
            raise RequestError(
                f"JSON nested deeper than {MAX_DEPTH} levels", _salvaged_reply_to(text)
            )
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(f"not JSON: {_short(exc)}", None) from None
    if not isinstance(document, dict):
        raise RequestError(f"a request is a JSON object, got {type(document).__name__}", None)
    target = reply_topic(document.get("headers"))
    if "payload" not in document:
        raise RequestError("the request has no payload", target)
    return ApiRequest(target, document["payload"])


def _salvaged_reply_to(text: str) -> str | None:
    """The ``replyTo`` of a request too deep to decode, found in its text."""
    return reply_topic({"replyTo": envelope.salvaged_string(text, "replyTo")})


def start_request(payload: object) -> JsonObject:
    """The ``TransactionReq`` of a start's payload; raise ``RequestError`` when invalid."""
    if not isinstance(payload, dict):
        raise RequestError(_not_object(payload), None)
    value = {key: payload[key] for key in START_FIELDS if key in payload}
    problem = validation.check_arguments("start_transaction", {"value": value})
    if problem is not None:
        raise RequestError(problem.replace("At /value", "At /payload", 1), None)
    _check_unicode(value)
    return value


def stop_transaction_id(payload: object) -> str:
    """The ``transaction_id`` of a stop's payload; raise ``RequestError`` when invalid.

    The schema says ``{"transaction_id": ...}``; a bare string is taken as the id too, as
    the framework's request helper would send a string payload unwrapped.
    """
    if isinstance(payload, dict):
        transaction_id = payload.get("transaction_id")
        if not isinstance(transaction_id, str):
            raise RequestError("At /payload/transaction_id - a string is required", None)
    elif isinstance(payload, str):
        transaction_id = payload
    else:
        raise RequestError(_not_object(payload), None)
    _check_unicode(transaction_id)
    return transaction_id


def encode(value: object) -> bytes:
    """A message body: compact JSON, every string valid Unicode (lone surrogates replaced)."""
    return json.dumps(_clean(value), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _clean(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _check_unicode(value: object) -> None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("At /payload - a string is not valid Unicode", None) from None


def _not_object(payload: object) -> str:
    return f"At /payload - a JSON object is required, got {type(payload).__name__}"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
