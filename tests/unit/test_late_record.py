"""The late-record contract: topic names that no id can break, payloads the schema accepts."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.records.checks import CheckFailure
from lem_dcbm.records.late_record import (
    KeptRecord,
    kept_record_from_entry,
    late_record_message,
    late_record_schema,
    late_record_topic,
)

KEPT = KeptRecord(
    transaction_id="5f0c2a9e-0d1b-4c8e-9a57-2f4c5e6d7a81",
    meter_id="12024072805",
    ocmf='OCMF|{"FV":"1.0"}|{"SD":"00"}',
    public_key_ocmf="3059301306072A8648CE3D0201",
    signature_valid=True,
    failed_checks=(),
    started_at="2026-11-22T10:00:00Z",
    stopped_at="2026-11-22T10:30:00Z",
    fetched_at="2026-11-22T10:31:00Z",
)


@pytest.mark.parametrize(
    ("prefix", "transaction_id", "topic"),
    [
        ("", "tx-1", "lem_dcbm/pm_1/records/tx-1"),
        ("external/", "tx-1", "external/lem_dcbm/pm_1/records/tx-1"),
        ("external", "tx-1", "external/lem_dcbm/pm_1/records/tx-1"),
        ("", "a/b+c#d", "lem_dcbm/pm_1/records/a%2Fb%2Bc%23d"),
        ("", "Zähler 1", "lem_dcbm/pm_1/records/Z%C3%A4hler%201"),
        ("", "bad\ud800", "lem_dcbm/pm_1/records/bad%ED%A0%80"),
        ("", "", "lem_dcbm/pm_1/records/%00"),
    ],
)
def test_topic_levels_cannot_be_broken_by_an_id(
    prefix: str, transaction_id: str, topic: str
) -> None:
    assert late_record_topic(prefix, "pm_1", transaction_id) == topic


def test_messages_validate_against_the_shipped_schema() -> None:
    schema = late_record_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    message = late_record_message(KEPT, module_id="pm_1", published_at="2026-11-22T10:31:01Z")
    jsonschema.validate(message, schema)
    failed = KeptRecord(
        **{
            **{f: getattr(KEPT, f) for f in KEPT.__dataclass_fields__},
            "signature_valid": None,
            "failed_checks": (CheckFailure("order", "end before begin"),),
            "started_at": None,
        }
    )
    jsonschema.validate(
        late_record_message(failed, module_id="pm_1", published_at="2026-11-22T10:31:01Z"), schema
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**message, "extra": 1}, schema)


def test_a_journal_entry_becomes_a_kept_record(tmp_path: Path) -> None:
    journal = TransactionJournal(tmp_path, clock=ManualClock())
    journal.record(
        "tx-1", "start_requested", meter_id="12024072805", started_at="2026-11-22T10:00:00Z"
    )
    assert kept_record_from_entry(journal.get("tx-1")) is None  # type: ignore[arg-type]
    entry = journal.record(
        "tx-1",
        "ocmf_fetched",
        ocmf=KEPT.ocmf,
        public_key_ocmf=KEPT.public_key_ocmf,
        verdict={
            "signature_valid": False,
            "failed_checks": [{"check": "signature", "detail": "x"}],
        },
        fetched_at="2026-11-22T10:31:00Z",
    )
    kept = kept_record_from_entry(entry)
    assert kept is not None
    assert kept.transaction_id == "tx-1"
    assert kept.meter_id == "12024072805"
    assert kept.signature_valid is False
    assert kept.failed_checks == (CheckFailure("signature", "x"),)
    assert kept.started_at == "2026-11-22T10:00:00Z"
