"""``lem-dcbm records list|export|resend`` as processes, on a journal written by the journal."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lem_dcbm.clock import ManualClock
from lem_dcbm.harness import Broker, write_config
from lem_dcbm.journal import TransactionJournal, entry_file_name
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.records.late_record import late_record_topic, message_schema
from lem_dcbm.simulator.ocmf_signer import OcmfReading, OcmfSigner, build_payload, tamper_record
from tests.support.cli_in_process import CliResult, run_cli
from tests.support.record_samples import CONTENT

pytestmark = pytest.mark.integration

MODULE_ID = "powermeter_1"
METER_ID = "12024072805"


@pytest.fixture(scope="module")
def signer() -> OcmfSigner:
    return OcmfSigner.generate()


@functools.cache  # ECDSA signatures differ at every signing: one record per transaction
def record_for(signer: OcmfSigner, number: int) -> str:
    """The record of the ``number``-th transaction (0, 1, 2...): one hour apart, 10.5 kWh more."""
    hour = 9 + number  # local time +0100
    content = replace(
        CONTENT,
        meter_id=METER_ID,
        identification="04A1B2C3",
        tariff_text="",
        cable=replace(CONTENT.cable, ident=0),
        pagination=5 + number,
        begin=OcmfReading(f"2026-11-22T{hour + 1:02d}:00:00,000+0100 R", 100.0 + 20 * number, 0.0),
        end=OcmfReading(f"2026-11-22T{hour + 1:02d}:30:00,000+0100 R", 110.5 + 20 * number, 0.0),
    )
    return signer.record(build_payload(content))


def run_transaction(
    journal: TransactionJournal,
    signer: OcmfSigner,
    transaction_id: str,
    number: int,
    *,
    record: str | None = None,
    fetched: bool = True,
    **extra: Any,
) -> None:
    """Journal a transaction the way the controller does, started ``number`` hours after 09:00."""
    journal.record(
        transaction_id,
        "start_confirmed",
        also=("start_requested",),
        meter_id=METER_ID,
        evse_id="DE*LEM*E0001",
        client_id="04A1B2C3",
        tariff_text="",
        tariff_id=0,
        cable_id=0,
        pagination=5 + number,
        started_at=f"2026-11-22T{9 + number:02d}:00:00.000Z",
        public_key_ocmf=signer.public_key_ocmf,
    )
    stop = {"stopped_at": f"2026-11-22T{9 + number:02d}:30:00.000Z", "transaction_status": 17}
    if not fetched:
        journal.record(transaction_id, "stop_confirmed", also=("stop_requested",), **stop)
        return
    journal.record(
        transaction_id,
        "ocmf_fetched",
        also=("stop_requested", "stop_confirmed"),
        ocmf=record or record_for(signer, number),
        fetched_at=f"2026-11-22T{9 + number:02d}:30:02.000Z",
        verdict={"signature_valid": True, "failed_checks": []},
        **stop,
        **extra,
    )


@pytest.fixture
def journal_base(tmp_path: Path, signer: OcmfSigner) -> Path:
    """A journal base with three transactions with records and one awaiting its record."""
    base = tmp_path / "state"
    clock = ManualClock(start=datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc))
    journal = TransactionJournal(base / MODULE_ID, clock=clock)
    run_transaction(journal, signer, "tx-a", 0)
    run_transaction(
        journal, signer, "tx/b+#", 1, late=True, late_published_at="2026-11-22T10:31:00.000Z"
    )
    run_transaction(journal, signer, "tx-c", 2)
    run_transaction(journal, signer, "tx-d", 3, fetched=False)
    return base


def records_process(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``lem-dcbm records`` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "lem_dcbm", "records", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def records(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """``lem-dcbm records`` in this process."""
    return run_cli(["records", *args], capsys)


def where(base: Path) -> list[str]:
    return ["--journal-dir", str(base), "--module-id", MODULE_ID]


def test_export_json_lists_every_transaction_with_verifying_records(
    journal_base: Path, signer: OcmfSigner
) -> None:
    result = records_process("export", *where(journal_base))

    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    assert [item["transaction_id"] for item in exported] == ["tx-a", "tx/b+#", "tx-c", "tx-d"]
    assert [item["state"] for item in exported] == ["kept", "kept", "kept", "awaited"]
    for item in exported[:3]:
        value = item["signed_meter_value"]
        assert verify_ocmf(value["signed_meter_data"], value["public_key"])
        assert item["verification"] == {"signature_valid": True, "failed_checks": []}
        assert item["summary"]["energy_wh"] == 10500
        assert item["module_id"] == MODULE_ID
    assert exported[1]["late"] is True
    assert exported[1]["published_at"] == "2026-11-22T10:31:00.000Z"
    assert exported[0]["published_at"] is None
    assert exported[3]["signed_meter_value"] is None
    assert exported[3]["stopped_at"] == "2026-11-22T12:30:00.000Z"


def test_export_csv_one_row_per_transaction(
    journal_base: Path, signer: OcmfSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    result = records(capsys, "export", *where(journal_base), "--format", "csv")

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["transaction_id"] for row in rows] == ["tx-a", "tx/b+#", "tx-c", "tx-d"]
    for row in rows[:3]:
        assert verify_ocmf(row["ocmf"], signer.public_key_ocmf)
        assert (row["signature_valid"], row["failed_checks"]) == ("true", "")
        assert row["energy_kwh"] == "10.5"
    assert (rows[3]["state"], rows[3]["ocmf"], rows[3]["energy_kwh"]) == ("awaited", "", "")


def test_export_ocmf_one_record_per_line_into_a_file(
    journal_base: Path, signer: OcmfSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "records.txt"

    result = records(
        capsys, "export", *where(journal_base), "--format", "ocmf", "--output", str(output)
    )

    assert result.returncode == 0, result.stderr
    lines = output.read_text().splitlines()
    assert lines == [record_for(signer, number) for number in range(3)]
    assert all(verify_ocmf(line, signer.public_key_ocmf) for line in lines)


def test_export_verifies_again_and_names_failures(
    tmp_path: Path, signer: OcmfSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = TransactionJournal(tmp_path / MODULE_ID)
    run_transaction(journal, signer, "tx-1", 0, record=tamper_record(record_for(signer, 0)))
    # A record whose pagination goes back: the meter's T6 after its T7.
    run_transaction(journal, signer, "tx-2", 1, record=record_for(signer, 2), pagination=7)
    run_transaction(journal, signer, "tx-3", 2, record=record_for(signer, 1), pagination=6)

    result = records(capsys, "export", "--journal-dir", str(tmp_path), "--module-id", MODULE_ID)

    assert result.returncode == 0, result.stderr
    verdicts = [item["verification"] for item in json.loads(result.stdout)]
    assert verdicts[0]["signature_valid"] is False
    assert [f["check"] for f in verdicts[0]["failed_checks"]] == ["signature"]
    assert verdicts[1]["failed_checks"] == []
    assert [f["check"] for f in verdicts[2]["failed_checks"]] == ["pagination_order"]


def test_since_keeps_later_transactions(
    journal_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = records(capsys, "export", *where(journal_base), "--since", "2026-11-22T10:00:00Z")

    assert [item["transaction_id"] for item in json.loads(result.stdout)] == [
        "tx/b+#",
        "tx-c",
        "tx-d",
    ]
    assert (
        json.loads(records(capsys, "export", *where(journal_base), "--since", "2026-11-23").stdout)
        == []
    )


def test_list_shows_records_awaited_and_late(
    journal_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = records(capsys, "list", *where(journal_base))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "transaction",
        "started",
        "stopped",
        "energy",
        "record",
        "late",
        "verdict",
    ]
    assert lines[1].split() == [
        "tx-a",
        "2026-11-22T09:00:00.000Z",
        "2026-11-22T09:30:00.000Z",
        "10.500",
        "kWh",
        "kept",
        "-",
        "OK",
    ]
    assert lines[2].split()[0] == "tx/b+#"
    assert lines[2].split()[-2:] == ["late", "OK"]
    assert lines[4].split() == [
        "tx-d",
        "2026-11-22T12:00:00.000Z",
        "2026-11-22T12:30:00.000Z",
        "-",
        "awaited",
        "-",
        "-",
    ]


def test_list_json_from_the_module_config(
    journal_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        {"ip_address": "192.0.2.1", "journal_dir": str(journal_base)},
        module_id=MODULE_ID,
    )

    result = records(capsys, "list", "--config", str(config), "--json")

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(item["transaction_id"], item["record"]) for item in listed] == [
        ("tx-a", True),
        ("tx/b+#", True),
        ("tx-c", True),
        ("tx-d", False),
    ]
    assert listed[0]["energy_wh"] == 10500
    assert listed[0]["signature_valid"] is True
    assert listed[3]["state"] == "awaited"


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        ([], "--config FILE, or --module-id ID"),
        (["--journal-dir", "/nonexistent", "--module-id", "pm"], "no journal of module 'pm'"),
        (["--config", "/nonexistent.yaml"], "configuration error"),
    ],
)
def test_list_without_a_journal_exits_2(
    args: list[str], stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = records(capsys, "list", *args)

    assert result.returncode == 2
    assert stderr in result.stderr


def test_bad_since_exits_2(journal_base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = records(capsys, "list", *where(journal_base), "--since", "last week")

    assert result.returncode == 2
    assert "--since" in result.stderr


class Subscriber:
    """A plain MQTT client collecting (topic, payload, retained) of one subscription."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def next(self, timeout: float = 10.0) -> tuple[str, bytes, bool]:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_resend_publishes_the_kept_record_retained(
    journal_base: Path, mosquitto: Broker, signer: OcmfSigner
) -> None:
    broker = ["--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port)]
    env = {**os.environ, "EV_MQTT_EXTERNAL_PREFIX": "ext"}

    result = records_process("resend", "tx/b+#", *where(journal_base), *broker, env=env)

    assert result.returncode == 0, result.stderr
    topic = late_record_topic("ext/", MODULE_ID, "tx/b+#")
    assert topic == "ext/lem_dcbm/powermeter_1/records/tx%2Fb%2B%23"
    # Subscribing after the publication: only a retained message can arrive.
    late = Subscriber(mosquitto, "ext/lem_dcbm/#")
    try:
        received_topic, payload, retained = late.next()
    finally:
        late.close()
    assert (received_topic, retained) == (topic, True)
    message = json.loads(payload)
    jsonschema.validate(message, message_schema())
    assert message["transaction_id"] == "tx/b+#"
    assert message["signed_meter_value"]["signed_meter_data"] == record_for(signer, 1)
    assert verify_ocmf(
        message["signed_meter_value"]["signed_meter_data"],
        message["signed_meter_value"]["public_key"],
    )


@pytest.mark.parametrize(
    ("transaction_id", "stderr"), [("tx-zzz", "is not in the journal"), ("tx-d", "has no record")]
)
def test_resend_without_a_record_exits_1(
    journal_base: Path, transaction_id: str, stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No broker listens there: the journal is asked first, the broker only for a record.
    broker = ["--broker-host", "127.0.0.1", "--broker-port", "9"]

    result = records(capsys, "resend", transaction_id, *where(journal_base), *broker)

    assert result.returncode == 1
    assert stderr in result.stderr


def test_resend_without_a_broker_exits_3(
    journal_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = records(
        capsys,
        "resend",
        "tx-a",
        *where(journal_base),
        "--broker-host",
        "127.0.0.1",
        "--broker-port",
        "9",
    )

    assert result.returncode == 3
    assert "cannot connect to the MQTT broker" in result.stderr


def edit_entry(base: Path, transaction_id: str, **changes: Any) -> None:
    """Change a journal file on disk as somebody with access to it could (no verdict change)."""
    path = base / MODULE_ID / entry_file_name(transaction_id)
    document = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "ocmf":
            document["ocmf"] = value
        else:
            document["data"][key] = value
    path.write_text(json.dumps(document))


def no_retained_message(broker: Broker, topic: str) -> bool:
    """True when ``topic`` holds no retained message: a marker sent after subscribing comes first.

    A retained message reaches a subscriber when it subscribes, before anything published
    after the subscription was acknowledged.
    """
    subscribed = threading.Event()
    messages: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_message = lambda _c, _u, m: messages.put(m.payload)
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(10), "no SUBACK from the broker"
        client.publish(topic, b"marker", qos=1).wait_for_publish(10)
        return messages.get(timeout=10) == b"marker"
    finally:
        client.disconnect()
        client.loop_stop()


def test_resend_refuses_a_record_edited_on_disk(
    journal_base: Path, mosquitto: Broker, signer: OcmfSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    # The stored verdict still says "valid"; the record now bills 1 kWh... more.
    edit_entry(journal_base, "tx-a", ocmf=tamper_record(record_for(signer, 0)))
    listed = records(capsys, "list", "--json", *where(journal_base))
    assert json.loads(listed.stdout)[0]["signature_valid"] is False
    broker = ["--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port)]

    result = records_process("resend", "tx-a", *where(journal_base), *broker)

    assert result.returncode == 1, result.stdout
    assert "fails its checks now (signature: " in result.stderr
    assert "not published" in result.stderr
    assert no_retained_message(mosquitto, late_record_topic("", MODULE_ID, "tx-a"))


def test_resend_publishes_a_content_failure_with_its_fresh_verdict(
    journal_base: Path, mosquitto: Broker, signer: OcmfSigner
) -> None:
    # The start's facts say another card than the record: checked now, not taken as stored.
    edit_entry(journal_base, "tx-a", client_id="CARD-OF-SOMEBODY-ELSE")
    broker = ["--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port)]

    result = records_process("resend", "tx-a", *where(journal_base), *broker)

    assert result.returncode == 0, result.stderr
    assert "published with its failed checks: identification: " in result.stderr
    late = Subscriber(mosquitto, late_record_topic("", MODULE_ID, "tx-a"))
    try:
        _topic, payload, retained = late.next()
    finally:
        late.close()
    message = json.loads(payload)
    jsonschema.validate(message, message_schema())
    assert retained
    assert message["verification"]["signature_valid"] is True
    assert [f["check"] for f in message["verification"]["failed_checks"]] == ["identification"]


def test_export_says_what_holds_now_for_a_record_edited_on_disk(
    journal_base: Path, signer: OcmfSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_entry(journal_base, "tx-c", ocmf=tamper_record(record_for(signer, 2)))

    result = records(capsys, "export", *where(journal_base))

    assert result.returncode == 0, result.stderr
    exported = {item["transaction_id"]: item for item in json.loads(result.stdout)}
    assert exported["tx-c"]["verification"]["signature_valid"] is False
    assert [f["check"] for f in exported["tx-c"]["verification"]["failed_checks"]] == ["signature"]
    assert exported["tx-a"]["verification"] == {"signature_valid": True, "failed_checks": []}


def test_bad_until_exits_2(journal_base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = records(capsys, "export", *where(journal_base), "--until", "tomorrow-ish")

    assert result.returncode == 2
    assert "--until 'tomorrow-ish' is not a date" in result.stderr


def test_ocmf_lines_leave_out_a_record_edited_on_disk(
    journal_base: Path, signer: OcmfSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_entry(journal_base, "tx-a", ocmf=tamper_record(record_for(signer, 0)))

    result = records(capsys, "export", *where(journal_base), "--format", "ocmf")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [record_for(signer, 1), record_for(signer, 2)]
    assert "the record of 'tx-a' fails its checks now (signature: " in result.stderr
