"""TEMPORARY minimal stand-in, replaced by the real module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lem_dcbm.records.checks import CheckFailure


@dataclass(frozen=True, kw_only=True, slots=True)
class KeptRecord:
    transaction_id: str
    meter_id: str
    ocmf: str
    public_key_ocmf: str
    signature_valid: bool | None
    failed_checks: tuple[CheckFailure, ...]
    started_at: str | None
    stopped_at: str | None
    fetched_at: str


def late_record_topic(external_prefix: str, module_id: str, transaction_id: str) -> str:
    return f"{external_prefix}lem_dcbm/{module_id}/records/{quote(transaction_id, safe='')}"


def late_record_message(kept: KeptRecord, *, module_id: str, published_at: str) -> dict[str, Any]:
    return {
        "version": 1,
        "module_id": module_id,
        "transaction_id": kept.transaction_id,
        "meter_id": kept.meter_id,
        "signed_meter_value": {
            "signed_meter_data": kept.ocmf,
            "signing_method": "",
            "encoding_method": "OCMF",
            "public_key": kept.public_key_ocmf,
        },
        "verification": {
            "signature_valid": kept.signature_valid,
            "failed_checks": [{"check": f.check, "detail": f.detail} for f in kept.failed_checks],
        },
        "started_at": kept.started_at,
        "stopped_at": kept.stopped_at,
        "fetched_at": kept.fetched_at,
        "published_at": published_at,
    }
