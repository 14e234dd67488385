"""The late-record road: a record that reached no stop answer, as a retained MQTT message.

EvseManager asks for a transaction's record once, in its stop. A record the meter hands
out only after that stop was answered (or one of a transaction nobody stopped through
EVerest) would reach no bill, so it is published retained on
``{external prefix}lem_dcbm/{module id}/records/{transaction id}``, where a backend can
take it without EvseManager. The payload is described by ``late-record.schema.json``
beside this file; this module builds topic and payload, the adapter sends them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lem_dcbm.journal import JournalEntry
from lem_dcbm.records.checks import CheckFailure

#: Version of the payload format; bumped only for changes a consumer must know.
MESSAGE_VERSION = 1
SCHEMA_FILE = "late-record.schema.json"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")


@dataclass(frozen=True, kw_only=True, slots=True)
class KeptRecord:
    """A transaction's signed record as the journal keeps it, with its verdict and times."""

    transaction_id: str
    meter_id: str
    ocmf: str
    public_key_ocmf: str
    #: None when the record could not be checked.
    signature_valid: bool | None
    failed_checks: tuple[CheckFailure, ...]
    #: RFC 3339 UTC times, as far as they are known.
    started_at: str | None
    stopped_at: str | None
    fetched_at: str


def topic_segment(text: str) -> str:
    """``text`` as one topic level: every byte outside ``[A-Za-z0-9._~-]`` %-encoded.

    A transaction id comes from the network; ``/``, ``+`` and ``#`` must never change the
    shape of the topic. The UTF-8 bytes are encoded (a lone surrogate too), so no two ids
    share a topic, and UUIDs stay as they are.
    """
    raw = text.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in raw) or "%00"


def late_record_topic(external_prefix: str, module_id: str, transaction_id: str) -> str:
    """The retained topic of ``transaction_id``'s record."""
    prefix = (
        external_prefix
        if not external_prefix or external_prefix.endswith("/")
        else external_prefix + "/"
    )
    return f"{prefix}lem_dcbm/{topic_segment(module_id)}/records/{topic_segment(transaction_id)}"


def late_record_message(kept: KeptRecord, *, module_id: str, published_at: str) -> dict[str, Any]:
    """The payload published for ``kept`` (see ``late-record.schema.json``)."""
    return {
        "version": MESSAGE_VERSION,
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


def kept_record_from_entry(entry: JournalEntry) -> KeptRecord | None:
    """What the journal holds for one transaction, or None while it has no record."""
    if entry.ocmf is None:
        return None
    data = entry.data
    found = data.get("verdict")
    verdict: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    failures = tuple(
        CheckFailure(str(item.get("check", "")), str(item.get("detail", "")))
        for item in verdict.get("failed_checks", [])
        if isinstance(item, Mapping)
    )
    valid = verdict.get("signature_valid")

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return KeptRecord(
        transaction_id=str(data.get("session_of") or entry.transaction_id),
        meter_id=text("meter_id") or "",
        ocmf=entry.ocmf,
        public_key_ocmf=text("public_key_ocmf") or "",
        signature_valid=valid if isinstance(valid, bool) else None,
        failed_checks=failures,
        started_at=text("started_at"),
        stopped_at=text("stopped_at"),
        fetched_at=text("fetched_at") or entry.updated_at,
    )


def late_record_schema() -> dict[str, Any]:
    """The JSON Schema of the payload, as shipped in the package."""
    text = resources.files("lem_dcbm.records").joinpath(SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
