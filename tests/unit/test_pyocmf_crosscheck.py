"""Our record checks beside an independent verifier, pyocmf, over a corpus of records.

The corpus: the real LEM record, every kind of record the simulator's signer writes (a
running transaction's, a finished one's with the end state G, T or E and the end time
synchronised or not, with and without tariff text, identification and cable
compensation), and tampered, foreign and unreadable ones. Each side's opinion is written
out per record below: where the two differ, the difference is asserted exactly, so a
change on either side shows, and docs/records.md ("Agreements and disagreements") says
why. Only pyocmf's errors count; its warnings (time status ``R`` rather than ``S``, the
format of an identification) are not verdicts in the Transparenzsoftware either.
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from lem_dcbm.records.checks import FORMAT, SIGNATURE, RecordExpectation, check_record
from lem_dcbm.simulator.ocmf_signer import (
    CableCompensation,
    OcmfReading,
    OcmfSigner,
    build_payload,
    tamper_record,
)
from tests.support.record_samples import CONTENT, real_record

if sys.version_info < (3, 11):  # pyocmf needs 3.11; CI runs the newest Python
    pytest.skip("pyocmf needs Python 3.11 or newer", allow_module_level=True)

import pyocmf  # noqa: E402 - after the version guard

DOC = Path(__file__).resolve().parents[2] / "docs" / "records.md"

#: A signature's fate: "valid", "invalid" (also: cannot be checked with this key),
#: "unreadable" (not an OCMF record).
VALID, INVALID, UNREADABLE = "valid", "invalid", "unreadable"


@dataclass(frozen=True)
class Opinion:
    """What one verifier says of one record."""

    signature: str
    #: Our failed content checks, or pyocmf's Eichrecht error codes.
    failures: tuple[str, ...]

    @property
    def billable(self) -> bool:
        """A valid signature and no failure."""
        return self.signature == VALID and not self.failures


def ours(record: str, key: str, expected: RecordExpectation) -> Opinion:
    verdict = check_record(record, expected, key)
    if FORMAT in verdict.failed_checks:
        return Opinion(UNREADABLE, ())
    content = tuple(check for check in verdict.failed_checks if check != SIGNATURE)
    return Opinion(VALID if verdict.signature_valid else INVALID, content)


def theirs(record: str, key: str) -> Opinion:
    with warnings.catch_warnings(record=True):  # SpecWarnings are not verdicts
        warnings.simplefilter("always")
        try:
            parsed = pyocmf.OCMF.from_string(record)
        except pyocmf.PyOCMFError:
            return Opinion(UNREADABLE, ())
        try:
            signature = VALID if parsed.verify_signature(key) else INVALID
        except pyocmf.PyOCMFError:
            signature = INVALID
        errors = parsed.check_eichrecht(errors_only=True)
    return Opinion(signature, tuple(str(issue.code) for issue in errors))


SIGNER = OcmfSigner.generate()
OTHER_SIGNER = OcmfSigner.generate()
REAL = real_record()
NOTHING = RecordExpectation()


def simulated(signer: OcmfSigner = SIGNER, **changes: object) -> str:
    return signer.record(build_payload(replace(CONTENT, **changes)))  # type: ignore[arg-type]


def end_at(time: str, import_kwh: float = 142.125) -> OcmfReading:
    return OcmfReading(time, import_kwh, 2.5)


#: name -> (record, key, what the start said)
CORPUS: dict[str, tuple[str, str, RecordExpectation]] = {
    "lem_real": (REAL["ocmf"], REAL["public_key_ocmf_hex"], NOTHING),
    "lem_real_base64_key": (REAL["ocmf"], REAL["public_key_ocmf_base64"], NOTHING),
    "lem_real_other_key": (REAL["ocmf"], SIGNER.public_key_ocmf, NOTHING),
    "sim_finished": (simulated(), SIGNER.public_key_ocmf, NOTHING),
    "sim_finished_as_started": (
        simulated(),
        SIGNER.public_key_ocmf,
        RecordExpectation(
            meter_id=CONTENT.meter_id,
            client_id=CONTENT.identification,
            evse_id=CONTENT.evse_id,
            tariff_text=CONTENT.tariff_text,
            cable_id=CONTENT.cable.ident,
            pagination=CONTENT.pagination,
            after_pagination=CONTENT.pagination - 1,
        ),
    ),
    "sim_no_tariff_no_identification": (
        simulated(tariff_text="", identification_type=0, identification=""),
        SIGNER.public_key_ocmf,
        NOTHING,
    ),
    "sim_no_cable_compensation": (
        simulated(cable=CableCompensation("No_Comp", 0, 0)),
        SIGNER.public_key_ocmf,
        NOTHING,
    ),
    "sim_running": (simulated(end=None), SIGNER.public_key_ocmf, NOTHING),
    "sim_end_state_tampering": (simulated(end_state="T"), SIGNER.public_key_ocmf, NOTHING),
    "sim_end_state_error": (simulated(end_state="E"), SIGNER.public_key_ocmf, NOTHING),
    "sim_end_time_unsynchronised": (
        simulated(end=end_at("2026-03-01T10:30:00,000+0100 U")),
        SIGNER.public_key_ocmf,
        NOTHING,
    ),
    "sim_energy_goes_back": (
        simulated(end=end_at("2026-03-01T10:30:00,000+0100 R", 99.0)),
        SIGNER.public_key_ocmf,
        NOTHING,
    ),
    "sim_end_before_begin": (
        simulated(end=end_at("2026-03-01T09:30:00,000+0100 R")),
        SIGNER.public_key_ocmf,
        NOTHING,
    ),
    "sim_tampered": (tamper_record(simulated()), SIGNER.public_key_ocmf, NOTHING),
    "sim_foreign_signer": (simulated(OTHER_SIGNER), SIGNER.public_key_ocmf, NOTHING),
    "sim_other_meter": (
        simulated(meter_id="99999999999"),
        SIGNER.public_key_ocmf,
        RecordExpectation(meter_id=CONTENT.meter_id),
    ),
    "sim_other_card": (
        simulated(),
        SIGNER.public_key_ocmf,
        RecordExpectation(client_id="another card"),
    ),
    "sim_key_unusable": (simulated(), "00", NOTHING),
    "not_ocmf": ("OCMF|{not json", SIGNER.public_key_ocmf, NOTHING),
}

GOOD = Opinion(VALID, ())
FOREIGN = Opinion(INVALID, ())

#: name -> (our opinion, pyocmf's): every record, written out.
OPINIONS: dict[str, tuple[Opinion, Opinion]] = {
    "lem_real": (GOOD, GOOD),
    "lem_real_base64_key": (GOOD, GOOD),
    "lem_real_other_key": (FOREIGN, FOREIGN),
    "sim_finished": (GOOD, GOOD),
    "sim_finished_as_started": (GOOD, GOOD),
    "sim_no_tariff_no_identification": (GOOD, GOOD),
    "sim_no_cable_compensation": (GOOD, GOOD),
    "sim_running": (Opinion(VALID, ("readings",)), GOOD),
    "sim_end_state_tampering": (Opinion(VALID, ("status",)), Opinion(VALID, ("METER_STATUS",))),
    "sim_end_state_error": (Opinion(VALID, ("status",)), Opinion(VALID, ("METER_STATUS",))),
    "sim_end_time_unsynchronised": (GOOD, Opinion(VALID, ("TIME_SYNC",))),
    "sim_energy_goes_back": (Opinion(VALID, ("order",)), Opinion(VALID, ("VALUE_REGRESSION",))),
    "sim_end_before_begin": (Opinion(VALID, ("order",)), Opinion(VALID, ("TIME_REGRESSION",))),
    "sim_tampered": (FOREIGN, FOREIGN),
    "sim_foreign_signer": (FOREIGN, FOREIGN),
    "sim_other_meter": (Opinion(VALID, ("meter",)), GOOD),
    "sim_other_card": (Opinion(VALID, ("identification",)), GOOD),
    "sim_key_unusable": (FOREIGN, FOREIGN),
    "not_ocmf": (Opinion(UNREADABLE, ()), Opinion(UNREADABLE, ())),
}


def disagreements() -> set[str]:
    """The records on which the two verifiers reach a different verdict (billable or not)."""
    return {name for name, (our, their) in OPINIONS.items() if our.billable != their.billable}


def test_the_corpus_and_the_opinions_name_the_same_records() -> None:
    assert set(CORPUS) == set(OPINIONS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_verifier_says_what_is_written_down(name: str) -> None:
    record, key, expected = CORPUS[name]
    our, their = OPINIONS[name]

    assert ours(record, key, expected) == our
    assert theirs(record, key) == their


def test_signatures_never_disagree() -> None:
    assert [
        name for name, (our, their) in OPINIONS.items() if our.signature != their.signature
    ] == []


def test_the_disagreements_are_exactly_these() -> None:
    assert disagreements() == {
        "sim_running",
        "sim_end_time_unsynchronised",
        "sim_other_meter",
        "sim_other_card",
    }


def test_docs_explain_every_disagreement() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Agreements and disagreements with pyocmf", 1)[1].split("\n## ", 1)[0]
    rows = {
        match.group(1)
        for match in re.finditer(r"^\| `([a-z_0-9]+)` \|", section, flags=re.MULTILINE)
    }
    assert rows == set(OPINIONS)
    for name in disagreements():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        assert "**differ**" in row, row
