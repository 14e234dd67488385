"""``lem-dcbm ocmf verify`` as a process: the real LEM record, simulator records, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import Simulator
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.records.late_record import KeptRecord, late_record_message
from lem_dcbm.simulator.ocmf_signer import tamper_record
from tests.support.cli_in_process import CliResult, run_cli
from tests.support.record_samples import real_record

pytestmark = pytest.mark.integration

VECTOR = real_record()
RECORD: str = VECTOR["ocmf"]
KEY: str = VECTOR["public_key_ocmf_hex"]


def verify_process(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``lem-dcbm ocmf verify`` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "lem_dcbm", "ocmf", "verify", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """``lem-dcbm ocmf verify`` in this process."""
    return run_cli(["ocmf", "verify", *args], capsys)


def as_json(result: subprocess.CompletedProcess[str] | CliResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_real_record_passes_with_a_readable_summary() -> None:
    result = verify_process(RECORD, "--key", KEY, "--meter-id", "1242050810", "--cable-id", "0")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "meter            1242050810" in lines
    assert "transaction      T61" in lines
    assert "identification   NONE O-b9d89940be03-10802" in lines
    assert "EVSE             FR*A23*E45B*78D" in lines
    assert "begin            2025-10-26T12:50:00,000+0100 R  import 1319.135 kWh" in result.stdout
    assert "end              2025-10-26T13:06:07,000+0100 R  import 1328.281 kWh" in result.stdout
    assert "energy           9.146 kWh (9146 Wh)" in lines
    assert "signature        valid" in lines
    assert lines[-1] == "result: OK"


def test_record_from_a_file_with_json_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "record.txt"
    path.write_text(RECORD + "\n")

    result = verify(capsys, str(path), "--key", VECTOR["public_key_ocmf_base64"], "--json")

    assert result.returncode == 0, result.stderr
    report = as_json(result)
    assert report["ok"] is True
    assert report["signature_valid"] is True
    assert report["failed_checks"] == []
    assert report["summary"]["energy_wh"] == 9146
    assert report["record"] == RECORD


def test_late_record_message_on_stdin_brings_its_key() -> None:
    kept = KeptRecord(
        transaction_id="tx-1",
        meter_id="1242050810",
        ocmf=RECORD,
        public_key_ocmf=KEY,
        signature_valid=True,
        failed_checks=(),
        started_at=None,
        stopped_at=None,
        fetched_at="2026-11-22T10:00:00.000Z",
    )
    message = late_record_message(kept, module_id="pm1", published_at="2026-11-22T10:00:01Z")

    result = verify_process("-", "--json", stdin=json.dumps(message))

    assert result.returncode == 0, result.stderr
    assert as_json(result)["signature_valid"] is True


def test_tampered_record_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    result = verify(capsys, tamper_record(RECORD), "--key", KEY)

    assert result.returncode == 1
    assert "FAILED signature:" in result.stdout
    assert result.stdout.splitlines()[-1] == "result: FAILED"


def test_content_check_against_an_option_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    result = verify(capsys, RECORD, "--key", KEY, "--cable-id", "3", "--json")

    assert result.returncode == 1
    report = as_json(result)
    assert [failure["check"] for failure in report["failed_checks"]] == ["cable"]
    assert "cable" in report["checks_run"]


def test_without_a_key_the_signature_is_said_to_be_unchecked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = verify(capsys, RECORD)

    assert result.returncode == 3
    assert "NOT CHECKED" in result.stdout
    assert "result: OK" not in result.stdout
    assert result.stdout.rstrip().endswith(
        "result: UNCHECKED (no check failed, but the signature was not checked)"
    )


def test_without_a_key_as_a_process_and_as_json_nothing_says_ok() -> None:
    result = verify_process(RECORD, "--json")
    assert result.returncode == 3, result.stderr
    data = as_json(result)
    assert data["ok"] is False
    assert data["result"] == "unchecked"
    assert data["signature_checked"] is False
    assert data["failed_checks"] == []
    # A content check that fails still fails without a key: exit 1, not 3.
    failed = verify_process(RECORD, "--pagination", "99999")
    assert failed.returncode == 1
    assert "result: FAILED" in failed.stdout
    # With the key the same record is OK.
    checked = verify_process(RECORD, "--key", KEY)
    assert checked.returncode == 0
    assert checked.stdout.rstrip().endswith("result: OK")


def test_the_help_names_every_exit_code() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lem_dcbm", "ocmf", "verify", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    text = " ".join(result.stdout.split())
    for code in ("0 every check passed", "1 a check failed", "2 bad usage", "3 no check failed"):
        assert code in text


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["no-such-file"], "neither an OCMF record nor a readable file"),
        ([RECORD, "--key", "not a key"], "public key cannot be read"),
        ([RECORD, "--from-meter", "ftp://meter"], "is not http(s)://host[:port]"),
        ([RECORD, "--from-meter", "https://127.0.0.1:1"], "--cert PEM"),
        ([RECORD, "--cert", "meter.pem"], "--cert goes with"),
        ([RECORD, "--key", KEY, "--from-meter", "http://127.0.0.1:1"], "not allowed with"),
        (["OCMF|{not json}|{}"], "not a readable OCMF record"),
    ],
)
def test_bad_usage_or_input_exits_2(
    args: list[str], stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = verify(capsys, *args)

    assert result.returncode == 2
    assert stderr in result.stderr


def test_unreachable_meter_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    result = verify(capsys, RECORD, "--from-meter", "http://127.0.0.1:9", "--timeout", "2")

    assert result.returncode == 2
    assert "cannot read the key from the meter" in result.stderr


def run_transaction(sim: Simulator, transaction_id: str) -> str:
    """Start and stop a transaction at the simulator; its signed record."""
    pem = sim.cert_path.read_text() if sim.tls and sim.cert_path else ""
    client = MeterClient.connect(sim.host, sim.port, tls_certificate_pem=pem, api_version="v2")
    try:
        client.start_transaction(
            {
                "evseId": "DE*LEM*E0001",
                "transactionId": transaction_id,
                "clientId": "04A1B2C3",
                "tariffId": 1,
                "cableId": 2,
                "userData": "",
                "TT": "0,39 EUR/kWh",
            }
        )
        client.stop_transaction(transaction_id)
        return client.ocmf(transaction_id)
    finally:
        client.close()


def test_key_from_the_meter(simulator: Simulator) -> None:
    record = run_transaction(simulator, "tx-verify-1")
    expectations = ["--client-id", "04A1B2C3", "--evse-id", "DE*LEM*E0001", "--cable-id", "2"]

    result = verify_process(record, "--from-meter", simulator.base_url, *expectations, "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = as_json(result)
    assert report["signature_valid"] is True
    assert report["summary"]["meter_serial"] == "12024072805"
    assert {"signature", "meter", "identification", "evse", "cable"} <= set(report["checks_run"])


def test_record_of_another_meter_fails_against_the_meter(
    simulator: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    result = verify(capsys, RECORD, "--from-meter", simulator.base_url, "--json")

    assert result.returncode == 1
    report = as_json(result)
    assert [failure["check"] for failure in report["failed_checks"]] == ["signature", "meter"]


def test_key_from_a_meter_over_https(
    tls_simulator: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tls_simulator.cert_path is not None
    record = run_transaction(tls_simulator, "tx-verify-tls")

    result = verify(
        capsys,
        record,
        "--from-meter",
        tls_simulator.base_url,
        "--cert",
        str(tls_simulator.cert_path),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "signature        valid" in result.stdout
