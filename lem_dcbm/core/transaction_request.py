"""Turning a start request into the meter's start body, within its limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lem_dcbm.core.results import TransactionRequest
from lem_dcbm.errors import LemDcbmError

#: Field limits of the operation manual, in bytes of UTF-8.
MAX_ID_BYTES = 37
TARIFF_ID_RANGE = range(0, 5)
CABLE_ID_RANGE = range(0, 8)


class RequestRejected(LemDcbmError, ValueError):
    """A start request breaks a meter limit; the message says which field and why."""


def utf8_len(text: str) -> int:
    """Length of ``text`` in bytes of UTF-8."""
    return len(text.encode("utf-8"))


def cut_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8 without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


@dataclass(frozen=True, kw_only=True, slots=True)
class StartSettings:
    """The configured parts of a start body."""

    tariff_id: int
    cable_id: int
    sc: int = 0
    uv: str = ""
    ud: str = ""


def build_start_body(
    request: TransactionRequest, settings: StartSettings, *, v2: bool
) -> dict[str, Any]:
    """Build the ``POST /legal`` body; raise ``RequestRejected`` when a limit is broken."""
    transaction_id = request.transaction_id
    evse_id = request.evse_id
    if not transaction_id:
        raise RequestRejected("transaction_id must not be empty")
    if utf8_len(transaction_id) > MAX_ID_BYTES:
        raise RequestRejected(
            f"transaction_id is {utf8_len(transaction_id)} bytes of UTF-8, "
            f"the meter accepts at most {MAX_ID_BYTES}"
        )
    if utf8_len(evse_id) > MAX_ID_BYTES:
        raise RequestRejected(
            f"evse_id is {utf8_len(evse_id)} bytes of UTF-8, "
            f"the meter accepts at most {MAX_ID_BYTES}"
        )
    if settings.tariff_id not in TARIFF_ID_RANGE:
        raise RequestRejected(f"tariff_id {settings.tariff_id} is outside 0..4")
    if settings.cable_id not in CABLE_ID_RANGE:
        raise RequestRejected(f"cable_id {settings.cable_id} is outside 0..7")
    # The meter signs clientId; identification data comes first so that a cut keeps it.
    identification = request.identification_data
    client_id = cut_utf8(f"{identification},{transaction_id}", MAX_ID_BYTES)
    body: dict[str, Any] = {
        "evseId": evse_id,
        "transactionId": transaction_id,
        "clientId": client_id,
        "tariffId": settings.tariff_id,
        "cableId": settings.cable_id,
        "userData": "",
    }
    if v2:
        body["TT"] = request.tariff_text
        body["UV"] = settings.uv
        body["UD"] = settings.ud
        body["SC"] = settings.sc
    return body
