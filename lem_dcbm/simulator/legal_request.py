"""The body of a transaction start (``POST /v1/legal`` or ``/v2/legal``) and its limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lem_dcbm.simulator.refusals import FieldError

#: Text fields of every start and their limit in bytes of UTF-8 (operation manual).
TEXT_LIMITS: dict[str, int] = {"evseId": 37, "transactionId": 37, "clientId": 37, "userData": 128}
#: Integer fields of every start and their inclusive range.
INT_RANGES: dict[str, tuple[int, int]] = {"tariffId": (0, 4), "cableId": (0, 7)}
#: Fields only a ``/v2/legal`` start carries; all optional.
V2_TEXT_FIELDS = ("TT", "UV", "UD")
V2_INT_FIELDS = ("SC",)


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A validated start; ``echo`` is the body as the meter repeats it."""

    evse_id: str
    transaction_id: str
    client_id: str
    tariff_id: int
    cable_id: int
    user_data: str
    tariff_text: str = ""
    user_version: str = ""
    user_detail: str = ""
    sc: int | None = None
    echo: dict[str, Any] = field(default_factory=dict)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_start(body: object, api: str) -> StartRequest:
    """Validate a start body for ``api`` ("v1" or "v2"); raise ``FieldError`` on a breach."""
    if not isinstance(body, Mapping):
        raise FieldError("body", "the body must be a JSON object")
    allowed = set(TEXT_LIMITS) | set(INT_RANGES)
    if api == "v2":
        allowed |= set(V2_TEXT_FIELDS) | set(V2_INT_FIELDS)
    for name in body:
        if name not in allowed:
            raise FieldError(name, f"{name} is not a field of a {api} start")
    for name, limit in TEXT_LIMITS.items():
        if name not in body:
            raise FieldError(name, f"{name} is missing")
        value = body[name]
        if not isinstance(value, str):
            raise FieldError(name, f"{name} must be a string")
        if len(value.encode("utf-8")) > limit:
            raise FieldError(name, f"{name} exceeds {limit} bytes")
    if not body["transactionId"]:
        raise FieldError("transactionId", "transactionId must not be empty")
    for name, (low, high) in INT_RANGES.items():
        if name not in body:
            raise FieldError(name, f"{name} is missing")
        if not _is_int(body[name]) or not low <= body[name] <= high:
            raise FieldError(name, f"{name} must be an integer {low}..{high}")
    for name in V2_TEXT_FIELDS:
        if name in body and not isinstance(body[name], str):
            raise FieldError(name, f"{name} must be a string")
    for name in V2_INT_FIELDS:
        if name in body and not _is_int(body[name]):
            raise FieldError(name, f"{name} must be an integer")
    return StartRequest(
        evse_id=body["evseId"],
        transaction_id=body["transactionId"],
        client_id=body["clientId"],
        tariff_id=body["tariffId"],
        cable_id=body["cableId"],
        user_data=body["userData"],
        tariff_text=body.get("TT", ""),
        user_version=body.get("UV", ""),
        user_detail=body.get("UD", ""),
        sc=body.get("SC"),
        echo=dict(body),
    )
