"""The core's command results as EVerest's ``TransactionStartResponse``/``StopResponse``."""

from __future__ import annotations

from typing import Any

from lem_dcbm.clock import rfc3339
from lem_dcbm.core.results import SignedRecord, StartResult, StopResult
from lem_dcbm.json_types import JsonObject

OK = "OK"
UNEXPECTED_ERROR = "UNEXPECTED_ERROR"


def signed_meter_value(record: SignedRecord) -> JsonObject:
    """A ``units_signed/SignedMeterValue`` holding an OCMF record unchanged."""
    return {
        "signed_meter_data": record.ocmf,
        "signing_method": "",
        "encoding_method": "OCMF",
        "public_key": record.public_key_ocmf,
    }


def start_response(result: StartResult) -> JsonObject:
    """The ``TransactionStartResponse`` of a start."""
    if result.error is not None or result.min_stop_time is None or result.max_stop_time is None:
        return failed(result.error or "the start gave no stop-time window")
    response: dict[str, Any] = {
        "status": OK,
        "transaction_min_stop_time": rfc3339(result.min_stop_time),
        "transaction_max_stop_time": rfc3339(result.max_stop_time),
    }
    if result.begin_record is not None:
        response["signed_meter_value"] = signed_meter_value(result.begin_record)
    return response


def stop_response(result: StopResult) -> JsonObject:
    """The ``TransactionStopResponse`` of a stop."""
    if result.error is not None or result.record is None:
        return failed(result.error or "the stop gave no record")
    return {"status": OK, "signed_meter_value": signed_meter_value(result.record)}


def failed(error: str) -> JsonObject:
    """A start or stop response with ``UNEXPECTED_ERROR`` and a readable reason."""
    return {"status": UNEXPECTED_ERROR, "error": error}
