"""The late-record contract: topic encoding, message shape, schema, reading the journal."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.records.checks import CheckFailure, RecordExpectation
from lem_dcbm.records.late_record import (
    KeptRecord,
    kept_record_from_entry,
    late_record_message,
    late_record_topic,
    message_schema,
    verified_now,
)
from lem_dcbm.simulator.ocmf_signer import OcmfSigner, build_payload, tamper_record
from tests.support.record_samples import CONTENT

SIGNER = OcmfSigner.generate()
#: A complete record of meter 12024072805, signed with SIGNER's key.
RECORD = SIGNER.record(build_payload(CONTENT))
KEY = SIGNER.public_key_ocmf


def validator() -> jsonschema.protocols.Validator:
    """The schema's validator, with RFC 3339 times checked (no optional packages needed)."""
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def is_date_time(value: object) -> bool:
        return not isinstance(value, str) or (
            datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
        )

    schema = message_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=checker)


def kept(**changes: Any) -> KeptRecord:
    values: dict[str, Any] = {
        "transaction_id": "tx-1",
        "meter_id": "12024072805",
        "ocmf": RECORD,
        "public_key_ocmf": KEY,
        "signature_valid": True,
        "failed_checks": (),
        "started_at": "2026-11-22T10:00:00.000Z",
        "stopped_at": "2026-11-22T10:30:00.000Z",
        "fetched_at": "2026-11-22T10:30:04.250Z",
    }
    values.update(changes)
    return KeptRecord(**values)


@pytest.mark.parametrize(
    ("prefix", "transaction_id", "topic"),
    [
        ("", "tx-1", "lem_dcbm/pm1/records/tx-1"),
        ("external/", "tx-1", "external/lem_dcbm/pm1/records/tx-1"),
        ("external", "tx-1", "external/lem_dcbm/pm1/records/tx-1"),
        ("a/b/", "A.z_0~9-", "a/b/lem_dcbm/pm1/records/A.z_0~9-"),
        ("", "a/b", "lem_dcbm/pm1/records/a%2Fb"),
        ("", "+", "lem_dcbm/pm1/records/%2B"),
        ("", "#", "lem_dcbm/pm1/records/%23"),
        ("", "50%", "lem_dcbm/pm1/records/50%25"),
        ("", "id with space", "lem_dcbm/pm1/records/id%20with%20space"),
        ("", "Zähler", "lem_dcbm/pm1/records/Z%C3%A4hler"),
        ("", "\udc80", "lem_dcbm/pm1/records/%ED%B2%80"),
    ],
)
def test_topic(prefix: str, transaction_id: str, topic: str) -> None:
    assert late_record_topic(prefix, "pm1", transaction_id) == topic


def test_topic_needs_a_transaction_id() -> None:
    with pytest.raises(ValueError, match="transaction id"):
        late_record_topic("", "pm1", "")


def test_message_shape_and_schema() -> None:
    # The cable check cannot run again without the start's cable id: its failure stays.
    failure = CheckFailure("cable", "begin reading UC.UI 0, expected cable id 2")
    message = late_record_message(
        kept(failed_checks=(failure,), signature_valid=True),
        module_id="pm1",
        published_at="2026-11-22T10:31:00.000Z",
    )

    validator().validate(message)
    assert message == {
        "version": 1,
        "module_id": "pm1",
        "transaction_id": "tx-1",
        "meter_id": "12024072805",
        "pagination": CONTENT.pagination,
        "signed_meter_value": {
            "signed_meter_data": RECORD,
            "signing_method": "",
            "encoding_method": "OCMF",
            "public_key": KEY,
        },
        "verification": {
            "signature_valid": True,
            "failed_checks": [
                {"check": "cable", "detail": "begin reading UC.UI 0, expected cable id 2"}
            ],
        },
        "started_at": "2026-11-22T10:00:00.000Z",
        "stopped_at": "2026-11-22T10:30:00.000Z",
        "fetched_at": "2026-11-22T10:30:04.250Z",
        "published_at": "2026-11-22T10:31:00.000Z",
    }


def test_message_with_unknown_times_and_signature_validates() -> None:
    message = late_record_message(
        kept(started_at=None, stopped_at=None, signature_valid=None, public_key_ocmf=""),
        module_id="pm1",
        published_at="2026-11-22T10:31:00.000Z",
    )

    validator().validate(message)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("version",), 2),
        (("extra",), 1),
        (("signed_meter_value", "signed_meter_data"), "not a record"),
        (("signed_meter_value", "encoding_method"), "EDL"),
        (("verification", "signature_valid"), "yes"),
        (("verification", "failed_checks"), [{"check": "cable"}]),
        (("published_at",), "yesterday"),
        (("fetched_at",), None),
    ],
)
def test_schema_refuses_a_broken_message(path: tuple[str, ...], value: Any) -> None:
    message = late_record_message(kept(), module_id="pm1", published_at="2026-11-22T10:31:00Z")
    target = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value

    with pytest.raises(jsonschema.ValidationError):
        validator().validate(message)


def test_every_property_is_described() -> None:
    def walk(schema: dict[str, Any], where: str) -> None:
        assert schema.get("description"), f"{where} has no description"
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{where}.{name}")
        if "properties" in schema:
            assert schema.get("additionalProperties") is False, where
        if isinstance(schema.get("items"), dict):
            walk(schema["items"], f"{where}[]")

    walk(message_schema(), "message")


def journal(tmp_path: Path) -> TransactionJournal:
    clock = ManualClock(start=datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    return TransactionJournal(tmp_path, clock=clock)


def test_kept_record_from_a_full_entry(tmp_path: Path) -> None:
    store = journal(tmp_path)
    store.record(
        "tx-1",
        "start_confirmed",
        started_at="2026-11-22T09:00:00.000Z",
        meter_id="7",
        client_id="04A1B2C3D4",
        evse_id="DE*LEM*E0001",
        cable_id=2,
        pagination=7,
        previous_pagination=6,
    )
    entry = store.record(
        "tx-1",
        "ocmf_fetched",
        also=("stop_confirmed",),
        ocmf=RECORD,
        stopped_at="2026-11-22T09:30:00.000Z",
        public_key_ocmf=KEY,
        fetched_at="2026-11-22T09:30:01.000Z",
        verdict={"signature_valid": True, "failed_checks": [{"check": "order", "detail": "d"}]},
    )

    assert kept_record_from_entry(entry) == kept(
        meter_id="7",
        started_at="2026-11-22T09:00:00.000Z",
        stopped_at="2026-11-22T09:30:00.000Z",
        fetched_at="2026-11-22T09:30:01.000Z",
        failed_checks=(CheckFailure("order", "d"),),
        expected=RecordExpectation(
            meter_id="7",
            client_id="04A1B2C3D4",
            evse_id="DE*LEM*E0001",
            cable_id=2,
            pagination=7,
            after_pagination=6,
        ),
    )


def test_kept_record_from_a_sparse_entry(tmp_path: Path) -> None:
    entry = journal(tmp_path).record("tx-1", "ocmf_fetched", ocmf=RECORD, verdict="garbage")

    record = kept_record_from_entry(entry)

    assert record == kept(
        meter_id="12024072805",  # from the record's MS
        public_key_ocmf="",
        signature_valid=None,
        started_at=None,
        stopped_at=None,
        fetched_at=entry.updated_at,
    )
    message = late_record_message(record, module_id="pm1", published_at=entry.updated_at)
    validator().validate(message)


def test_a_record_a_stop_answered_with_says_so(tmp_path: Path) -> None:
    entry = journal(tmp_path).record("tx-1", "ocmf_fetched", ocmf=RECORD, answered=True)

    record = kept_record_from_entry(entry)

    assert record is not None
    assert record.answered
    message = late_record_message(record, module_id="pm1", published_at=entry.updated_at)
    validator().validate(message)
    assert message["answered"] is True
    # Absent, not false, when no answer carried it: the message reads as before.
    assert "answered" not in late_record_message(
        kept(), module_id="pm1", published_at=entry.updated_at
    )
    message["answered"] = False
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(message)


def test_no_kept_record_without_a_record(tmp_path: Path) -> None:
    entry = journal(tmp_path).record("tx-1", "stop_confirmed")

    assert kept_record_from_entry(entry) is None


def test_a_stored_verdict_never_vouches_for_an_edited_record() -> None:
    edited = kept(ocmf=tamper_record(RECORD), signature_valid=True, failed_checks=())

    message = late_record_message(edited, module_id="pm1", published_at="2026-11-22T10:31:00Z")

    validator().validate(message)
    assert message["verification"]["signature_valid"] is False
    assert [f["check"] for f in message["verification"]["failed_checks"]] == ["signature"]
    assert message["signed_meter_value"]["signed_meter_data"] == edited.ocmf


def test_the_facts_of_the_start_are_checked_again() -> None:
    stored_clean = kept(
        signature_valid=True,
        failed_checks=(),
        expected=RecordExpectation(client_id="another card", cable_id=2, pagination=7),
    )

    again = verified_now(stored_clean)

    assert again.signature_valid is True
    assert [f.check for f in again.failed_checks] == ["identification"]


def test_a_stored_failure_that_holds_no_more_is_dropped() -> None:
    # The record is fine and verifies: a stored "signature" failure was wrong or stale.
    stored = kept(signature_valid=False, failed_checks=(CheckFailure("signature", "x"),))

    assert verified_now(stored).signature_valid is True
    assert verified_now(stored).failed_checks == ()


def test_without_a_key_the_signature_is_unknown_whatever_was_stored() -> None:
    stored = kept(public_key_ocmf="", signature_valid=True)

    assert verified_now(stored).signature_valid is None


def test_an_unreadable_record_says_only_that() -> None:
    stored = kept(ocmf="OCMF|garbage", failed_checks=(CheckFailure("cable", "d"),))

    again = verified_now(stored)

    assert again.signature_valid is None
    assert [f.check for f in again.failed_checks] == ["format"]
