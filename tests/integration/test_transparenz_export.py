"""``lem-dcbm records export --format transparenz``, read back by an independent reader.

The journal is the one the controller wrote while it ran transactions against the
simulated meter; the export runs as its own process, as an operator runs it; pyocmf's
reader of the Transparenzsoftware's XML (``OcmfContainer.from_xml``) reads the file back
and must find the same records, the same key and the same verdicts as our checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from lem_dcbm.harness import module_env
from lem_dcbm.journal import entry_file_name
from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.records.checks import RecordExpectation, check_record
from lem_dcbm.simulator.ocmf_signer import tamper_record
from tests.support.record_rig import Rig, request

if sys.version_info < (3, 11):  # pyocmf needs 3.11; CI runs the newest Python
    pytest.skip("pyocmf needs Python 3.11 or newer", allow_module_level=True)

import pyocmf  # noqa: E402 - after the version guard

from lem_dcbm.everest.shapes import transaction_request

pytestmark = pytest.mark.integration

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "docs" / "examples" / "transparenz-one-transaction.xml"
)
#: The rig's journal lives in <base>/journal: base directory <base>, module id "journal".
MODULE_ID = "journal"


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """Three transactions run by the controller against the simulated meter."""
    rig = Rig(tmp_path / "base")
    for number in (1, 2, 3):
        transaction_id = f"tx-{number}"
        assert rig.controller.start_transaction(transaction_request(request(transaction_id))).ok
        rig.charge(600.0 * number)
        assert rig.controller.stop_transaction(transaction_id).ok
        rig.clock.advance(3600.0)
    return rig


def export(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lem_dcbm",
            "records",
            "export",
            "--journal-dir",
            str(base),
            "--module-id",
            MODULE_ID,
            *args,
        ],
        capture_output=True,
        text=True,
        env=module_env(),
        timeout=30,
        check=False,
    )


def read_back(path: Path) -> list[pyocmf.OcmfRecord]:
    return list(pyocmf.OcmfContainer.from_xml(path))


def test_three_transactions_read_back_with_the_same_records_keys_and_verdicts(
    rig: Rig, tmp_path: Path
) -> None:
    output = tmp_path / "transactions.xml"
    key = rig.device.status()["publicKeyOcmf"]

    result = export(tmp_path / "base", "--format", "transparenz", "--output", str(output))

    assert result.returncode == 0, result.stderr
    as_json = export(tmp_path / "base")
    ours = {row["transaction_id"]: row for row in json.loads(as_json.stdout)}
    entries = read_back(output)
    assert [(e.transaction_id, e.context) for e in entries] == [
        (1, "Transaction.End"),
        (2, "Transaction.End"),
        (3, "Transaction.End"),
    ]
    for entry, transaction_id in zip(entries, ("tx-1", "tx-2", "tx-3"), strict=True):
        record = rig.record_at_meter(transaction_id)
        parsed = parse_ocmf(record)
        assert parsed.signature_hex == entry.ocmf.signature.SD
        assert parsed.payload["PG"] == entry.ocmf.payload.PG
        assert parsed.payload["ID"] == entry.ocmf.payload.ID
        assert [r.RV for r in entry.ocmf.payload.RD] == [
            Decimal(str(r["RV"])) for r in parsed.payload["RD"]
        ]
        assert entry.public_key is not None
        assert entry.public_key.key.upper() == key
        # Same verdicts: the signature with the file's own key, and no Eichrecht error.
        assert ours[transaction_id]["verification"] == {
            "signature_valid": True,
            "failed_checks": [],
        }
        assert entry.verify_signature() is True
    results = pyocmf.OcmfContainer.from_xml(output).check_eichrecht(errors_only=True)
    assert [result.issues for result in results] == [[], [], []]
    # The file names each value's transaction for a human reader.
    assert "<!-- transaction tx-2 -->" in output.read_text()


def test_one_transaction_or_a_range(rig: Rig, tmp_path: Path) -> None:
    base = tmp_path / "base"
    one = tmp_path / "one.xml"
    started = {row["transaction_id"]: row["started_at"] for row in json.loads(export(base).stdout)}

    result = export(base, "--format", "transparenz", "--transaction", "tx-2", "--output", str(one))
    assert result.returncode == 0, result.stderr
    [entry] = read_back(one)
    assert entry.transaction_id == 1
    assert parse_ocmf(rig.record_at_meter("tx-2")).signature_hex == entry.ocmf.signature.SD

    ranged = tmp_path / "range.xml"
    result = export(
        base,
        "--format",
        "transparenz",
        "--since",
        started["tx-2"],
        "--until",
        started["tx-3"],
        "--output",
        str(ranged),
    )
    assert result.returncode == 0, result.stderr
    assert [e.ocmf.payload.PG for e in read_back(ranged)] == [
        parse_ocmf(rig.record_at_meter("tx-2")).payload["PG"]
    ]


def test_an_unknown_transaction_exits_1(rig: Rig, tmp_path: Path) -> None:
    result = export(tmp_path / "base", "--format", "transparenz", "--transaction", "tx-none")

    assert result.returncode == 1
    assert "holds no record of transaction 'tx-none'" in result.stderr


def test_a_record_failing_its_checks_is_left_out_unless_asked(rig: Rig, tmp_path: Path) -> None:
    base = tmp_path / "base"
    path = base / MODULE_ID / entry_file_name("tx-2")
    document = json.loads(path.read_text())
    document["ocmf"] = tamper_record(document["ocmf"])  # the stored verdict still says valid
    path.write_text(json.dumps(document))
    output = tmp_path / "out.xml"

    result = export(base, "--format", "transparenz", "--output", str(output))

    assert result.returncode == 1
    assert "the record of 'tx-2' fails its checks now (signature: " in result.stderr
    assert "left out" in result.stderr
    assert [e.ocmf.payload.PG for e in read_back(output)] == ["T1", "T3"]

    result = export(base, "--format", "transparenz", "--include-failed", "--output", str(output))

    assert result.returncode == 0, result.stderr
    assert "written as asked" in result.stderr
    entries = read_back(output)
    assert [e.ocmf.payload.PG for e in entries] == ["T1", "T2", "T3"]
    # pyocmf's verdict on the file agrees with ours: the edited record does not verify.
    assert [e.verify_signature() for e in entries] == [True, False, True]


def test_the_example_in_the_docs_reads_back_and_verifies() -> None:
    [entry] = read_back(EXAMPLE)
    record = EXAMPLE.read_text().split('encoding="plain">', 1)[1].split("</signedData>", 1)[0]
    assert entry.public_key is not None

    assert entry.verify_signature() is True
    assert entry.ocmf.is_eichrecht_compliant
    assert (entry.transaction_id, entry.context) == (1, "Transaction.End")
    verdict = check_record(record, RecordExpectation(), entry.public_key.key)
    assert (verdict.signature_valid, verdict.failures) == (True, ())
