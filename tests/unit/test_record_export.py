"""The journal as a report: states, ordering, re-verification, the export formats."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.records.export import (
    AWAITED,
    KEPT,
    NOT_STARTED,
    RUNNING,
    export_csv,
    export_object,
    export_ocmf,
    parse_time,
    reports,
)
from lem_dcbm.simulator.ocmf_signer import OcmfSigner, build_payload, tamper_record
from tests.support.record_samples import CONTENT

RECORD = 'OCMF|{"MS":"7","PG":"T1","RD":[{"TX":"B","RI":"1-0:1.8.0","RV":1,"ST":"G"}]}|{"SD":"00"}'


@pytest.fixture
def journal(tmp_path: Path) -> TransactionJournal:
    clock = ManualClock(start=datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    return TransactionJournal(tmp_path, clock=clock)


def test_states_follow_the_journal_steps(journal: TransactionJournal) -> None:
    journal.record("never", "start_requested", started_at="2026-11-22T08:00:00Z")
    journal.record("running", "start_confirmed", started_at="2026-11-22T09:00:00Z")
    journal.record("awaited", "stop_confirmed", started_at="2026-11-22T10:00:00Z")
    journal.record("kept", "ocmf_fetched", ocmf=RECORD, started_at="2026-11-22T11:00:00Z")

    states = [(r.transaction_id, r.state) for r in reports(journal.entries())]

    assert states == [
        ("never", NOT_STARTED),
        ("running", RUNNING),
        ("awaited", AWAITED),
        ("kept", KEPT),
    ]


def test_oldest_first_by_start_whatever_the_write_order(journal: TransactionJournal) -> None:
    journal.record("later", "start_confirmed", started_at="2026-11-22T09:00:00.000Z")
    journal.record("earlier", "start_confirmed", started_at="2026-11-22T08:00:00+00:00")
    journal.record("no start time", "start_requested")  # last write at 10:00 counts

    order = [r.transaction_id for r in reports(journal.entries())]

    assert order == ["earlier", "later", "no start time"]


def test_a_record_without_key_is_verified_for_content_only(journal: TransactionJournal) -> None:
    journal.record("tx", "ocmf_fetched", ocmf=RECORD, meter_id="8")

    (report,) = reports(journal.entries())

    assert report.verdict is not None
    assert report.verdict.signature_valid is None
    assert report.verdict.failed_checks == ("readings", "meter")
    assert export_object(report, "pm")["verification"]["signature_valid"] is None


def test_ocmf_export_leaves_out_records_with_line_breaks(journal: TransactionJournal) -> None:
    journal.record("one", "ocmf_fetched", ocmf=RECORD)
    journal.record("two", "ocmf_fetched", ocmf=RECORD.replace('"MS"', '\n"MS"'))

    text, skipped = export_ocmf(reports(journal.entries()))

    assert text == RECORD + "\n"
    assert skipped == ["two"]


def test_csv_has_a_header_and_blank_cells_for_unknowns(journal: TransactionJournal) -> None:
    journal.record("tx", "start_confirmed")

    lines = export_csv(reports(journal.entries())).splitlines()

    assert lines[0].startswith("transaction_id,state,started_at,stopped_at,meter_id,")
    assert lines[1].startswith("tx,running,,,")


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-11-22", "2026-11-22T00:00:00+00:00"),
        ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00+00:00"),
        ("2026-11-22T10:00:00+01:00", "2026-11-22T10:00:00+01:00"),
        ("2026-11-22 10:00", "2026-11-22T10:00:00+00:00"),
    ],
)
def test_parse_time(text: str, iso: str) -> None:
    assert parse_time(text).isoformat() == iso


def test_a_stored_verdict_only_adds_doubt_it_never_vouches(journal: TransactionJournal) -> None:
    signer = OcmfSigner.generate()
    record = signer.record(build_payload(CONTENT))
    stored = {
        "signature_valid": True,
        # No cable id was kept with the start: this check cannot run again, so it stays.
        "failed_checks": [{"check": "cable", "detail": "UC.UI 2, expected cable id 3"}],
    }
    journal.record(
        "edited",
        "ocmf_fetched",
        ocmf=tamper_record(record),
        public_key_ocmf=signer.public_key_ocmf,
        verdict=stored,
    )

    [report] = reports(journal.entries())

    assert report.verdict is not None
    assert report.verdict.signature_valid is False
    assert report.verdict.failed_checks == ("signature", "cable")
    assert export_object(report, "pm1")["verification"]["signature_valid"] is False
