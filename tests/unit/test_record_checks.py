"""Content checks of signed records: the real LEM record passes, each check catches its fault."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from lem_dcbm.records.checks import (
    CHECKS,
    IDENTITY_CHECKS,
    RecordExpectation,
    RecordVerdict,
    check_record,
    checks_run,
    pagination_of,
    same_session,
)
from lem_dcbm.records.readings import parse_meter_time
from lem_dcbm.records.summary import summarize
from lem_dcbm.simulator.ocmf_signer import OcmfSigner, build_payload, tamper_record
from tests.support.record_samples import CONTENT, real_record

#: What the transaction of the built records asked for.
EXPECTED = RecordExpectation(
    meter_id="12024072805",
    client_id="04A1B2C3D4",
    evse_id="DE*LEM*E0001",
    tariff_text="0,39 EUR/kWh",
    cable_id=2,
    pagination=7,
    after_pagination=6,
)


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    return real_record()


@pytest.fixture(scope="module")
def signer() -> OcmfSigner:
    return OcmfSigner.generate()


def signed(signer: OcmfSigner, edit: Callable[[dict[str, Any]], None] | None = None) -> str:
    """A record of CONTENT signed by ``signer``, its payload changed by ``edit`` first."""
    payload = json.loads(build_payload(CONTENT))
    if edit is not None:
        edit(payload)
    return signer.record(json.dumps(payload, separators=(",", ":")))


def failed(
    signer: OcmfSigner, record: str, expected: RecordExpectation = EXPECTED
) -> tuple[str, ...]:
    return check_record(record, expected, signer.public_key_ocmf).failed_checks


def test_real_lem_record_passes_every_check(vector: dict[str, Any]) -> None:
    expected = RecordExpectation(
        meter_id="1242050810",
        client_id="O-b9d89940be03-10802",
        evse_id="FR*A23*E45B*78D",
        tariff_text="",
        cable_id=0,
        pagination=61,
        after_pagination=60,
    )

    verdict = check_record(vector["ocmf"], expected, vector["public_key_ocmf_hex"])

    assert verdict == RecordVerdict(True, ())
    assert verdict.ok
    assert verdict.identity_ok


def test_real_lem_record_summary(vector: dict[str, Any]) -> None:
    summary = summarize(vector["ocmf"])

    assert summary.meter_serial == "1242050810"
    assert summary.pagination == 61
    assert (summary.identification_type, summary.identification) == ("NONE", "O-b9d89940be03-10802")
    assert summary.evse_id == "FR*A23*E45B*78D"
    assert summary.tariff_text is None
    assert summary.begin_time == "2025-10-26T12:50:00,000+0100 R"
    assert summary.end_time == "2025-10-26T13:06:07,000+0100 R"
    assert (summary.begin_import_kwh, summary.end_import_kwh) == (1319.135, 1328.281)
    assert (summary.begin_export_kwh, summary.end_export_kwh) == (7.641, 7.641)
    assert summary.energy_kwh == 9.146
    assert summary.energy_wh == 9146


def test_built_record_passes_every_check(signer: OcmfSigner) -> None:
    assert check_record(signed(signer), EXPECTED, signer.public_key_ocmf) == RecordVerdict(True, ())


def test_no_key_leaves_the_signature_unknown(signer: OcmfSigner) -> None:
    verdict = check_record(signed(signer), EXPECTED)

    assert verdict.signature_valid is None
    assert verdict.ok


def set_field(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        payload[key] = value

    return edit


def set_reading(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        payload["RD"][index][key] = value

    return edit


def drop_end(payload: dict[str, Any]) -> None:
    del payload["RD"][2:]


def second_begin(payload: dict[str, Any]) -> None:
    payload["RD"][2]["TX"] = "B"


# One case per content check: the record fails exactly that check, nothing else.
SINGLE_FAULTS: list[tuple[str, Callable[[dict[str, Any]], None] | None, RecordExpectation]] = [
    ("readings", drop_end, EXPECTED),
    ("readings", second_begin, EXPECTED),
    # The meter's clock set back during the transaction.
    ("order", set_reading(2, "TM", "2025-03-01T10:30:00,000+0100 R"), EXPECTED),
    # 10:30+0200 is 08:30 UTC, before the begin at 09:00 UTC: the offset counts.
    ("order", set_reading(2, "TM", "2026-03-01T10:30:00,000+0200 R"), EXPECTED),
    ("order", set_reading(2, "RV", 99.999), EXPECTED),
    ("order", set_reading(3, "RV", 2.4), EXPECTED),
    ("status", set_reading(3, "ST", "T"), EXPECTED),
    ("error_flags", set_reading(0, "EF", "E"), EXPECTED),
    ("meter", set_field("GS", "12024072806"), EXPECTED),
    ("meter", None, RecordExpectation(meter_id="12024072806")),
    ("identification", None, RecordExpectation(client_id="04A1B2C3D5")),
    ("evse", None, RecordExpectation(evse_id="DE*LEM*E0002")),
    ("evse", set_field("CT", "CBIDC"), EXPECTED),
    ("tariff_text", None, RecordExpectation(tariff_text="0,49 EUR/kWh")),
    ("tariff_text", None, RecordExpectation(tariff_text="")),
    ("cable", None, RecordExpectation(cable_id=0)),
    ("pagination", None, RecordExpectation(pagination=8)),
    ("pagination_order", None, RecordExpectation(after_pagination=7)),
    ("pagination_order", set_field("PG", "X7"), RecordExpectation(after_pagination=6)),
]


@pytest.mark.parametrize(
    ("check", "edit", "expected"),
    SINGLE_FAULTS,
    ids=[f"{case[0]}-{number}" for number, case in enumerate(SINGLE_FAULTS)],
)
def test_each_check_catches_its_fault_alone(
    signer: OcmfSigner,
    check: str,
    edit: Callable[[dict[str, Any]], None] | None,
    expected: RecordExpectation,
) -> None:
    verdict = check_record(signed(signer, edit), expected, signer.public_key_ocmf)

    assert verdict.failed_checks == (check,)
    assert verdict.signature_valid is True
    assert not verdict.ok
    assert verdict.identity_ok is (check not in IDENTITY_CHECKS)
    assert verdict.failures[0].detail


def test_every_content_check_has_a_single_fault_case() -> None:
    covered = {case[0] for case in SINGLE_FAULTS}

    assert covered == set(CHECKS) - {"format", "signature"}


def test_tampered_record_fails_only_the_signature(signer: OcmfSigner) -> None:
    verdict = check_record(tamper_record(signed(signer)), EXPECTED, signer.public_key_ocmf)

    assert verdict.failed_checks == ("signature",)
    assert verdict.signature_valid is False
    assert verdict.identity_ok


def test_record_of_another_key_fails_the_signature(signer: OcmfSigner) -> None:
    other = OcmfSigner.generate()

    assert failed(other, signed(signer)) == ("signature",)


@pytest.mark.parametrize(
    "record",
    [
        "",
        "OCMF|not json|{}",
        'OCMF|{"RD":[]}|{"SA":"ECDSA-secp256r1-SHA256","SD":"00"}',
        'OCMF|{"RD":[1]}|{"SA":"ECDSA-secp256r1-SHA256","SD":"00"}',
    ],
)
def test_unreadable_record_fails_format_alone(signer: OcmfSigner, record: str) -> None:
    verdict = check_record(record, EXPECTED, signer.public_key_ocmf)

    assert verdict.failed_checks == ("format",)
    assert verdict.signature_valid is None
    assert not verdict.identity_ok


def test_unsupported_algorithm_fails_the_signature(signer: OcmfSigner) -> None:
    record = signed(signer).replace("ECDSA-secp256r1-SHA256", "ECDSA-brainpool256r1-SHA256")

    verdict = check_record(record, EXPECTED, signer.public_key_ocmf)

    assert verdict.failed_checks == ("signature",)
    assert "unsupported" in verdict.failures[0].detail


def test_end_time_with_another_offset_is_compared_in_utc(signer: OcmfSigner) -> None:
    # 09:30+0000 is after the begin at 10:00+0100 (09:00 UTC).
    record = signed(signer, set_reading(2, "TM", "2026-03-01T09:30:00,000+0000 R"))

    assert failed(signer, record) == ()


def test_unreadable_time_fails_order(signer: OcmfSigner) -> None:
    record = signed(signer, set_reading(2, "TM", "yesterday"))

    assert failed(signer, record) == ("order",)


def test_empty_expectations_accept_absent_fields(signer: OcmfSigner) -> None:
    def strip(payload: dict[str, Any]) -> None:
        for key in ("TT", "ID", "CI", "CT"):
            payload.pop(key)

    expected = RecordExpectation(tariff_text="", client_id="", evse_id="")

    assert failed(signer, signed(signer, strip), expected) == ()


def test_verdict_round_trips_through_json(signer: OcmfSigner) -> None:
    verdict = check_record(signed(signer, drop_end), EXPECTED, signer.public_key_ocmf)

    assert RecordVerdict.from_json(json.loads(json.dumps(verdict.to_json()))) == verdict
    assert RecordVerdict.from_json("nonsense") is None


def test_checks_run_follow_the_expectation() -> None:
    assert checks_run(RecordExpectation(), with_key=False) == (
        "format",
        "readings",
        "order",
        "status",
        "error_flags",
        "meter",
    )
    assert checks_run(EXPECTED, with_key=True) == CHECKS
    assert "cable" in checks_run(RecordExpectation(cable_id=0), with_key=False)


def test_same_session(signer: OcmfSigner, vector: dict[str, Any]) -> None:
    complete = signed(signer)
    running = signed(signer, drop_end)  # fetched while the transaction ran: begin only

    assert same_session(complete, running)
    assert not same_session(complete, signed(signer, set_field("PG", "T8")))
    assert not same_session(complete, signed(signer, set_field("MS", "12024072806")))
    assert not same_session(
        complete, signed(signer, set_reading(0, "TM", "2026-03-01T10:00:01,000+0100 R"))
    )
    assert not same_session(complete, vector["ocmf"])
    assert not same_session(complete, "garbage")


def test_pagination_of(signer: OcmfSigner, vector: dict[str, Any]) -> None:
    assert pagination_of(vector["ocmf"]) == 61
    assert pagination_of(signed(signer)) == 7
    assert pagination_of(signed(signer, set_field("PG", "F7"))) is None
    assert pagination_of("garbage") is None


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2025-10-26T12:50:00,000+0100 R", "2025-10-26T12:50:00+01:00"),
        ("2025-10-26T12:50:00,250-0330 S", "2025-10-26T12:50:00.250000-03:30"),
        ("2025-10-26T12:50:00+01:00", "2025-10-26T12:50:00+01:00"),
        ("2025-10-26T11:50:00.5Z", "2025-10-26T11:50:00.500000+00:00"),
    ],
)
def test_meter_time(text: str, iso: str) -> None:
    assert parse_meter_time(text).isoformat() == iso


@pytest.mark.parametrize("text", ["", "2025-10-26 12:50:00", "2025-13-26T12:50:00,000+0100 R"])
def test_bad_meter_time(text: str) -> None:
    with pytest.raises(ValueError, match="TM"):
        parse_meter_time(text)


def test_a_client_id_without_the_identification_part_says_how_the_id_is_made(
    signer: OcmfSigner,
) -> None:
    # The module writes ID as "<identification data>,<transaction id>": a transaction id
    # alone failed a good record with no word why.
    record = signed(signer, set_field("ID", "04A1B2C3,tx-1"))
    verdict = check_record(record, RecordExpectation(client_id="tx-1"), signer.public_key_ocmf)
    assert verdict.failed_checks == ("identification",)
    detail = verdict.failures[0].detail
    assert detail.startswith("ID '04A1B2C3,tx-1', expected 'tx-1'")
    assert "'<identification data>,<transaction id>'" in detail
    whole = RecordExpectation(client_id="04A1B2C3,tx-1")
    assert check_record(record, whole, signer.public_key_ocmf).ok


def test_the_client_id_help_says_what_the_id_holds(capsys: pytest.CaptureFixture[str]) -> None:
    from lem_dcbm.cli import main

    with pytest.raises(SystemExit):
        main(["ocmf", "verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "lem-dcbm writes '<identification data>,<transaction id>'" in text
