"""``lem-dcbm ocmf verify`` and ``lem-dcbm records`` end to end, as an operator runs them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lem_dcbm.harness import Broker, Simulator, module_env
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.records.late_record import late_record_schema
from lem_dcbm.simulator.ocmf_signer import tamper_record
from tests.support.everest_peer import EverestPeer
from tests.support.faulty_transport import Rule
from tests.support.record_rig import Rig, request

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "ocmf" / "lem-real-record.json"
MODULE_ID = "pm_1"


def lem_dcbm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem_dcbm", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=module_env(),
        timeout=30,
        check=False,
    )


def journal_with_three_transactions(tmp_path: Path) -> tuple[Path, Rig]:
    """Three transactions run by the controller against the simulated meter."""
    rig = Rig(tmp_path / MODULE_ID)
    for number in (1, 2, 3):
        transaction_id = f"tx-{number}"
        assert rig.controller.start_transaction(request(transaction_id))["status"] == "OK"
        rig.charge(60.0 * number)
        assert rig.controller.stop_transaction(transaction_id)["status"] == "OK"
    return tmp_path, rig


def test_export_after_three_transactions_lists_all_three_verifying(tmp_path: Path) -> None:
    base, rig = journal_with_three_transactions(tmp_path)
    # The rig's journal is <base>/pm_1/journal; the module's would be <journal_dir>/<module id>.
    journal_dir = str(base / MODULE_ID / "journal")
    where = ["--journal-dir", str(Path(journal_dir).parent), "--module-id", "journal"]
    key = rig.device.status()["publicKeyOcmf"]

    exported = lem_dcbm("records", "export", *where, "--format", "json")
    assert exported.returncode == 0, exported.stderr
    rows = json.loads(exported.stdout)
    assert [row["transaction_id"] for row in rows] == ["tx-1", "tx-2", "tx-3"]
    for row in rows:
        assert row["ocmf"] == rig.record_at_meter(row["transaction_id"])
        assert verify_ocmf(row["ocmf"], key)
        assert row["signature_valid"] is True
        assert row["failed_checks"] == []
        assert row["energy_wh"] > 0

    as_csv = lem_dcbm("records", "export", *where, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["transaction_id"] for r in table] == ["tx-1", "tx-2", "tx-3"]
    assert all(verify_ocmf(r["ocmf"], key) for r in table)

    out = tmp_path / "records.ocmf"
    as_ocmf = lem_dcbm("records", "export", *where, "--format", "ocmf", "--output", str(out))
    assert as_ocmf.returncode == 0, as_ocmf.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    assert all(verify_ocmf(line, key) for line in lines)

    since = lem_dcbm("records", "export", *where, "--since", "2999-01-01")
    assert json.loads(since.stdout) == []


def test_list_shows_an_awaited_record(tmp_path: Path) -> None:
    rig = Rig(tmp_path / MODULE_ID)
    rig.controller.start_transaction(request("tx-1"))
    rig.charge()
    rig.transport.add(Rule("GET", "/v1/ocmf", "reset", until=rig.clock.monotonic() + 600))
    assert rig.controller.stop_transaction("tx-1")["status"] == "UNEXPECTED_ERROR"
    listing = lem_dcbm(
        "records",
        "list",
        "--journal-dir",
        str(tmp_path / MODULE_ID),
        "--module-id",
        "journal",
        "--json",
    )
    assert listing.returncode == 0, listing.stderr
    [row] = json.loads(listing.stdout)
    assert row["transaction_id"] == "tx-1"
    assert row["state"] == "awaiting record"
    text = lem_dcbm(
        "records", "list", "--journal-dir", str(tmp_path / MODULE_ID), "--module-id", "journal"
    )
    assert "awaiting record" in text.stdout


def test_records_without_a_journal_say_where_they_looked(tmp_path: Path) -> None:
    missing = lem_dcbm("records", "list", "--journal-dir", str(tmp_path), "--module-id", "nope")
    assert missing.returncode == 1
    assert str(tmp_path / "nope") in missing.stderr
    usage = lem_dcbm("records", "list")
    assert usage.returncode == 2
    assert "--module-id" in usage.stderr


def real() -> dict[str, str]:
    data: dict[str, str] = json.loads(REAL.read_text())
    return data


def test_verify_the_real_record_with_its_key() -> None:
    data = real()
    done = lem_dcbm(
        "ocmf",
        "verify",
        data["ocmf"],
        "--key",
        data["public_key_ocmf_hex"],
        "--meter-id",
        "1242050810",
        "--evse-id",
        "FR*A23*E45B*78D",
        "--pagination",
        "61",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks passed" in done.stdout
    assert "9.146 kWh" in done.stdout
    assert "2025-10-26T12:50:00,000+0100 R" in done.stdout


def test_verify_reads_stdin_and_files_and_fails_a_tampered_record(tmp_path: Path) -> None:
    data = real()
    tampered = tamper_record(data["ocmf"])
    from_stdin = lem_dcbm(
        "ocmf", "verify", "-", "--key", data["public_key_ocmf_base64"], "--json", stdin=tampered
    )
    assert from_stdin.returncode == 1
    verdict: dict[str, Any] = json.loads(from_stdin.stdout)
    assert verdict["signature_valid"] is False
    assert [f["check"] for f in verdict["failed_checks"]] == ["signature"]
    record_file = tmp_path / "record.txt"
    record_file.write_text(data["ocmf"] + "\n")
    wrong_meter = lem_dcbm("ocmf", "verify", str(record_file), "--meter-id", "1")
    assert wrong_meter.returncode == 1
    assert "meter" in wrong_meter.stdout
    unreadable = lem_dcbm("ocmf", "verify", str(tmp_path / "absent.txt"))
    assert unreadable.returncode == 2
    assert "record" in unreadable.stderr


def test_verify_with_the_key_from_the_meter(simulator: Simulator) -> None:
    import requests

    base = simulator.base_url
    body = {
        "evseId": "E1",
        "transactionId": "v-1",
        "clientId": "c",
        "tariffId": 0,
        "cableId": 0,
        "userData": "",
    }
    assert requests.post(f"{base}/v1/legal", json=body, timeout=5).status_code == 201
    stopped = requests.put(f"{base}/v1/legal?transactionId=v-1", json={"running": False}, timeout=5)
    assert stopped.status_code == 200
    record = requests.get(f"{base}/v1/ocmf?transactionId=v-1", timeout=5).text
    done = lem_dcbm("ocmf", "verify", record, "--from-meter", base, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["signature_valid"] is True


def test_resend_publishes_the_kept_record_retained(tmp_path: Path, mosquitto: Broker) -> None:
    base, rig = journal_with_three_transactions(tmp_path)
    where = ["--journal-dir", str(base / MODULE_ID), "--module-id", "journal"]
    broker = ["--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port)]
    done = lem_dcbm("records", "resend", "tx-2", *where, *broker, "--external-prefix", "ext/")
    assert done.returncode == 0, done.stderr
    topic = "ext/lem_dcbm/journal/records/tx-2"
    # A subscriber that comes later still gets it: the message is retained.
    with EverestPeer(mosquitto.host, mosquitto.port) as late_reader:
        late_reader.subscribe("ext/#")
        [message] = late_reader.wait_for(lambda: late_reader.on_topic(topic), 10, "the record")
    assert message.retain
    payload = message.json()
    jsonschema.validate(payload, late_record_schema())
    assert payload["signed_meter_value"]["signed_meter_data"] == rig.record_at_meter("tx-2")
    unknown = lem_dcbm("records", "resend", "tx-9", *where, *broker)
    assert unknown.returncode == 1
    assert "no record of tx-9" in unknown.stderr
