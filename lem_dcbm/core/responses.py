"""EVerest result values of the powermeter commands, as plain dicts."""

from __future__ import annotations

from typing import Any

OK = "OK"
UNEXPECTED_ERROR = "UNEXPECTED_ERROR"


def signed_meter_value(ocmf: str, public_key_ocmf: str) -> dict[str, Any]:
    """A ``units_signed/SignedMeterValue`` holding an OCMF record unchanged."""
    return {
        "signed_meter_data": ocmf,
        "signing_method": "",
        "encoding_method": "OCMF",
        "public_key": public_key_ocmf,
    }


def start_ok(
    min_stop_time: str, max_stop_time: str, start_value: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A successful ``TransactionStartResponse``."""
    result: dict[str, Any] = {
        "status": OK,
        "transaction_min_stop_time": min_stop_time,
        "transaction_max_stop_time": max_stop_time,
    }
    if start_value is not None:
        result["signed_meter_value"] = start_value
    return result


def stop_ok(value: dict[str, Any]) -> dict[str, Any]:
    """A successful ``TransactionStopResponse``."""
    return {"status": OK, "signed_meter_value": value}


def failed(error: str) -> dict[str, Any]:
    """A start or stop response with ``UNEXPECTED_ERROR`` and a readable reason."""
    return {"status": UNEXPECTED_ERROR, "error": error}
