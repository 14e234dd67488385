"""Content checks: the real LEM record passes all; each check fails alone on a record made to.

Each failing record is built like the simulator's (the real record's field order) and
signed with the simulator's key, so the signature holds and only the one check fails.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.records import checks
from lem_dcbm.records.checks import (
    RecordExpectation,
    check_record,
    pagination_of,
    reading_time,
    same_session,
)
from lem_dcbm.simulator.ocmf_signer import (
    CableCompensation,
    OcmfContent,
    OcmfReading,
    OcmfSigner,
    build_payload,
)

#: A published record of a real LEM DCBM with its key (its source is named in the file).
REAL = Path(__file__).resolve().parents[1] / "fixtures" / "ocmf" / "lem-real-record.json"
SIGNER = OcmfSigner.generate()
KEY = SIGNER.public_key_ocmf

CONTENT = OcmfContent(
    meter_id="12024072805",
    firmware="MU-2.3.0.1_SU-0.1.3.0",
    pagination=7,
    identification_type=3,
    identification="04A2B3C4,tx-7",
    tariff_text="0.59 EUR/kWh",
    evse_id="DE*LEM*E0001",
    cable=CableCompensation("2mR_Comp", 1, 2),
    begin=OcmfReading("2026-11-22T11:00:00,000+0100 S", 100.0, 2.0),
    end=OcmfReading("2026-11-22T11:30:00,000+0100 S", 125.5, 2.0),
)
EXPECTED = RecordExpectation(
    meter_id="12024072805",
    client_id="04A2B3C4,tx-7",
    evse_id="DE*LEM*E0001",
    tariff_text="0.59 EUR/kWh",
    cable_id=1,
    pagination=7,
    after_pagination=6,
)


def signed(edit: Callable[[dict[str, Any]], None] | None = None) -> str:
    """The good record, changed by ``edit`` on its payload, then signed."""
    payload = json.loads(build_payload(CONTENT))
    if edit is not None:
        edit(payload)
    return SIGNER.record(json.dumps(payload, separators=(",", ":"), ensure_ascii=False))


def real_record() -> dict[str, str]:
    data: dict[str, str] = json.loads(REAL.read_text())
    return data


def test_the_real_lem_record_passes_every_check() -> None:
    data = real_record()
    expected = RecordExpectation(
        meter_id="1242050810",
        client_id="O-b9d89940be03-10802",
        evse_id="FR*A23*E45B*78D",
        tariff_text="",
        cable_id=0,
        pagination=61,
        after_pagination=60,
    )
    verdict = check_record(data["ocmf"], expected, data["public_key_ocmf_hex"])
    assert verdict.failures == ()
    assert verdict.signature_valid is True
    assert verdict.ok


def test_the_good_simulated_record_passes_every_check() -> None:
    verdict = check_record(signed(), EXPECTED, KEY)
    assert verdict.ok, verdict.failures


def end_reading(payload: dict[str, Any]) -> dict[str, Any]:
    reading: dict[str, Any] = payload["RD"][2]
    return reading


def set_key(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        payload[key] = value

    return edit


def second_end(payload: dict[str, Any]) -> None:
    payload["RD"].append({**end_reading(payload), "TM": "2026-11-22T11:40:00,000+0100 S"})


def end_before_begin(payload: dict[str, Any]) -> None:
    end_reading(payload)["TM"] = "2025-11-22T11:30:00,000+0100 S"


def status_error(payload: dict[str, Any]) -> None:
    end_reading(payload)["ST"] = "E"


def error_flag(payload: dict[str, Any]) -> None:
    payload["RD"][0]["EF"] = "t"


def other_cable(payload: dict[str, Any]) -> None:
    payload["RD"][0]["UC"]["UI"] = 3


FAILING: dict[str, Callable[[dict[str, Any]], None]] = {
    checks.READINGS: second_end,
    checks.ORDER: end_before_begin,
    checks.STATUS: status_error,
    checks.ERROR_FLAGS: error_flag,
    checks.METER: set_key("MS", "99999999999"),
    checks.IDENTIFICATION: set_key("ID", "04A2B3C4,tx-6"),
    checks.EVSE: set_key("CI", "DE*LEM*E0002"),
    checks.TARIFF_TEXT: set_key("TT", "0.99 EUR/kWh"),
    checks.CABLE: other_cable,
    checks.PAGINATION: set_key("PG", "T8"),
}


@pytest.mark.parametrize("check", sorted(FAILING))
def test_a_record_failing_one_check_fails_only_that_one(check: str) -> None:
    verdict = check_record(signed(FAILING[check]), EXPECTED, KEY)
    assert verdict.failed_checks == (check,), verdict.failures
    assert verdict.signature_valid is True
    assert not verdict.ok


def test_record_number_not_above_the_previous_fails_only_its_order() -> None:
    expected = dataclasses.replace(EXPECTED, after_pagination=7)
    verdict = check_record(signed(), expected, KEY)
    assert verdict.failed_checks == (checks.PAGINATION_ORDER,)


def test_a_falling_import_register_fails_order() -> None:
    verdict = check_record(signed(lambda p: end_reading(p).update(RV=99.0)), EXPECTED, KEY)
    assert verdict.failed_checks == (checks.ORDER,)
    assert "falls from 100.0 to 99.0" in verdict.failures[0].detail


def test_a_changed_record_fails_only_the_signature() -> None:
    record = signed().replace('"RV":125.5', '"RV":125.6')
    verdict = check_record(record, EXPECTED, KEY)
    assert verdict.failed_checks == (checks.SIGNATURE,)
    assert verdict.signature_valid is False


def test_an_unreadable_record_fails_format_alone() -> None:
    verdict = check_record("OCMF|{not json|{}", EXPECTED, KEY)
    assert verdict.failed_checks == (checks.FORMAT,)
    assert verdict.signature_valid is None


def test_without_expectations_only_the_record_itself_is_checked() -> None:
    verdict = check_record(signed(set_key("ID", "anything")), RecordExpectation())
    assert verdict.ok
    assert verdict.signature_valid is None


def test_every_check_has_a_failing_case() -> None:
    covered = {*FAILING, checks.PAGINATION_ORDER, checks.SIGNATURE, checks.FORMAT}
    assert covered == set(checks.CHECKS)


def test_pagination_and_same_session() -> None:
    record = signed()
    assert pagination_of(record) == 7
    assert pagination_of("not a record") is None
    again = SIGNER.record(build_payload(CONTENT))  # a new signature of the same payload
    assert same_session(record, again)
    assert not same_session(record, signed(set_key("PG", "T8")))
    assert not same_session(record, "OCMF|{}|{}")


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2025-10-26T12:50:00,000+0100 R", "2025-10-26T12:50:00+01:00"),
        ("2026-11-22T10:00:00,5+00:00 S", "2026-11-22T10:00:00.500000+00:00"),
        ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00+00:00"),
    ],
)
def test_reading_times_parse_with_their_offset(text: str, iso: str) -> None:
    parsed = reading_time(text)
    assert parsed is not None
    assert parsed.isoformat() == iso


def test_an_unreadable_time_is_none() -> None:
    assert reading_time("yesterday") is None
