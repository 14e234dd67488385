"""The late-record road: a signed record published where a backend takes it without EvseManager.

EvseManager asks for a transaction's record once, in ``stop_transaction``. A record that
reaches the module after that answer (the meter was slow, its record endpoint failed)
would never reach the bill, so the module publishes it, retained with QoS 1, on

    {external_prefix}lem_dcbm/{module_id}/records/{transaction_id, percent-encoded}

under EVerest's external MQTT prefix (``EV_MQTT_EXTERNAL_PREFIX``), and ``lem-dcbm records
resend`` publishes a kept record there again. The payload is described, as a contract,
by ``late-record.schema.json`` beside this file; ``docs/records.md`` tells the story.

Every message is verified when it is built (:func:`verified_now`): a verdict stored with
the record (in the journal, on a disk anybody with access may edit) never vouches for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lem_dcbm.journal import JournalEntry
from lem_dcbm.json_types import JsonObject
from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.records.checks import (
    CHECKS,
    FORMAT,
    CheckFailure,
    RecordExpectation,
    RecordVerdict,
    check_record,
    checks_run,
    pagination_of,
)

#: Version of the message layout; a change that breaks readers raises it.
MESSAGE_VERSION = 1
#: File name of the JSON Schema of the message, in this package.
SCHEMA_FILE = "late-record.schema.json"
#: MQTT QoS of the publication: at least once; a backend deduplicates on meter id and record number.
QOS = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class KeptRecord:
    """A transaction's signed record as the journal keeps it, with its verdict and times."""

    transaction_id: str
    #: The meter's serial (``MS``), as the module knew it.
    meter_id: str
    #: The OCMF record exactly as the meter sent it.
    ocmf: str
    #: The meter's ``publicKeyOcmf`` (hex DER) that verifies the record; "" when unknown.
    public_key_ocmf: str
    #: Whether the signature verified; None when it could not be checked.
    signature_valid: bool | None
    #: The content checks the record failed (see :mod:`lem_dcbm.records.checks`).
    failed_checks: tuple[CheckFailure, ...]
    #: When the meter confirmed the start and the stop (RFC 3339 UTC), if known.
    started_at: str | None
    stopped_at: str | None
    #: When the module got the record from the meter (RFC 3339 UTC).
    fetched_at: str
    #: What the record must say (the facts of the start), for checking it again.
    expected: RecordExpectation = field(default_factory=RecordExpectation)
    #: A stop's answer carried the record to EvseManager as well (its start-up recovery).
    answered: bool = False


def late_record_topic(external_prefix: str, module_id: str, transaction_id: str) -> str:
    """The retained topic of one transaction's record.

    Every character of the id outside ``[A-Za-z0-9._~-]`` is percent-encoded (UTF-8), so
    ``/``, ``+`` and ``#`` in an id can never change the topic's shape.
    """
    if not transaction_id:
        raise ValueError("a late-record topic needs a transaction id")
    prefix = (
        external_prefix
        if not external_prefix or external_prefix.endswith("/")
        else external_prefix + "/"
    )
    # quote() on bytes: an id with a lone surrogate (the journal keeps those) still encodes.
    segment = quote(transaction_id.encode("utf-8", "surrogatepass"), safe="")
    return f"{prefix}lem_dcbm/{module_id}/records/{segment}"


def verified_now(kept: KeptRecord) -> KeptRecord:
    """``kept`` with the verdict of checking its record now, against its key and facts.

    The stored verdict never vouches: the signature and every check that can run again
    are run again. A stored failure of a check that cannot run again here (its facts are
    not at hand, say the previous record's pagination) is kept, as it can only add doubt.
    """
    expected = kept.expected
    if expected.meter_id is None and kept.meter_id:
        expected = replace(expected, meter_id=kept.meter_id)
    key = kept.public_key_ocmf or None
    verdict = check_record(kept.ocmf, expected, key)
    rerun = set(checks_run(expected, key is not None)) | set(verdict.failed_checks)
    if FORMAT in verdict.failed_checks:
        rerun = set(CHECKS)  # unreadable now: what was found in it once says nothing more
    carried = tuple(failure for failure in kept.failed_checks if failure.check not in rerun)
    return replace(
        kept, signature_valid=verdict.signature_valid, failed_checks=verdict.failures + carried
    )


def late_record_message(kept: KeptRecord, *, module_id: str, published_at: str) -> JsonObject:
    """The JSON payload published on :func:`late_record_topic` (schema version 1).

    The ``verification`` is the one of :func:`verified_now`, made at this moment.
    """
    kept = verified_now(kept)
    return {
        "version": MESSAGE_VERSION,
        "module_id": module_id,
        "transaction_id": kept.transaction_id,
        "meter_id": kept.meter_id,
        # With meter_id the key a backend drops a duplicate on (the record's own MS and PG).
        "pagination": pagination_of(kept.ocmf),
        "signed_meter_value": {
            "signed_meter_data": kept.ocmf,
            "signing_method": "",
            "encoding_method": "OCMF",
            "public_key": kept.public_key_ocmf,
        },
        "verification": {
            "signature_valid": kept.signature_valid,
            "failed_checks": [failure.to_json() for failure in kept.failed_checks],
        },
        "started_at": kept.started_at,
        "stopped_at": kept.stopped_at,
        "fetched_at": kept.fetched_at,
        "published_at": published_at,
        # Only when true, so a message of a record no answer carried reads as before.
        **({"answered": True} if kept.answered else {}),
    }


def kept_record_from_entry(entry: JournalEntry) -> KeptRecord | None:
    """The kept record of a journal entry; None when the entry holds no record yet."""
    if entry.ocmf is None:
        return None
    data = entry.data
    verdict = RecordVerdict.from_json(data.get("verdict")) or RecordVerdict(None, ())
    return KeptRecord(
        transaction_id=entry.transaction_id,
        meter_id=_text(data.get("meter_id")) or _serial_of(entry.ocmf),
        ocmf=entry.ocmf,
        public_key_ocmf=_text(data.get("public_key_ocmf")),
        signature_valid=verdict.signature_valid,
        failed_checks=verdict.failures,
        started_at=_text(data.get("started_at")) or None,
        stopped_at=_text(data.get("stopped_at")) or None,
        fetched_at=_text(data.get("fetched_at")) or entry.updated_at,
        expected=expectation_of(data),
        answered=data.get("answered") is True,
    )


def expectation_of(data: Mapping[str, object]) -> RecordExpectation:
    """What a transaction's record must say, from the facts the journal stored with it."""
    return RecordExpectation(
        meter_id=_text(data.get("meter_id")) or None,
        client_id=_text_or_none(data.get("client_id")),
        evse_id=_text_or_none(data.get("evse_id")),
        tariff_text=_text_or_none(data.get("tariff_text")),
        cable_id=_int(data.get("cable_id")),
        pagination=_int(data.get("pagination")),
        after_pagination=_int(data.get("previous_pagination")),
    )


def message_schema() -> JsonObject:
    """The JSON Schema of the late-record message, as shipped in the package."""
    # Beside this file, not through importlib.resources (see config.load_manifest).
    text = Path(__file__).with_name(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _serial_of(ocmf: str) -> str:
    """``MS`` of the record, for entries written before the meter id was stored."""
    try:
        return _text(parse_ocmf(ocmf).payload.get("MS"))
    except ValueError:
        return ""
