"""The stop waits for a late record; a record later still goes out on its retained topic.

Real mosquitto, the simulator over HTTP and the module as a process; the record endpoint
is made to fail for a while after the stop with the simulator's timed fault.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    ModuleProcess,
    Simulator,
    module_env,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.harness import (
    transaction_request as request,
)
from lem_dcbm.journal import JournalEntry, read_journal
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.records.late_record import message_schema
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EXTERNAL_PREFIX = "ext/"
OCMF_PATHS = ["/v1/ocmf", "/v2/ocmf"]
# Above the 3 s failure the first test waits out, with room for one more fetch attempt.
WAIT_MS = 4500


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        started.subscribe(f"{EXTERNAL_PREFIX}#")
        yield started


@pytest.fixture
def module(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> Iterator[ModuleProcess]:
    values = simulator_config(
        simulator, journal_dir=str(tmp_path / "journal"), stop_record_wait_ms=WAIT_MS
    )
    config = write_config(tmp_path / "config.yaml", values)
    started = start_module(
        tmp_path, config, mosquitto.port, env={"EV_MQTT_EXTERNAL_PREFIX": EXTERNAL_PREFIX}
    )
    try:
        peer.wait_for_var("public_key_ocmf", 1, timeout=20)
        yield started
    finally:
        assert started.terminate() == 0, started.log()[-3000:]


def start(peer: EverestPeer) -> tuple[str, str]:
    """Start a new transaction; return (its id, the meter's public key)."""
    transaction_id = str(uuid.uuid4())
    answer = peer.call("start_transaction", {"value": request(transaction_id)}, timeout=15)
    assert answer["retval"]["status"] == "OK", answer
    return transaction_id, str(peer.vars("public_key_ocmf")[-1].value)


def stop(peer: EverestPeer, transaction_id: str) -> dict[str, Any]:
    answer = peer.call("stop_transaction", {"transaction_id": transaction_id}, timeout=30)
    retval: dict[str, Any] = answer["retval"]
    return retval


def test_record_failing_for_3_s_is_waited_for(
    simulator: Simulator, peer: EverestPeer, module: ModuleProcess
) -> None:
    transaction_id, key = start(peer)
    simulator.set_faults(http_status=500, paths=OCMF_PATHS, for_ms=3000)
    asked = time.monotonic()
    retval = stop(peer, transaction_id)
    took = time.monotonic() - asked
    assert retval["status"] == "OK", f"{retval}\n{module.log()[-3000:]}"
    record = retval["signed_meter_value"]["signed_meter_data"]
    assert verify_ocmf(record, key)
    assert 3.0 <= took < WAIT_MS / 1000 + 2, took
    assert peer.on_topic_prefix(EXTERNAL_PREFIX) == []


def test_record_later_than_the_budget_is_published_and_listed(
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: Broker,
    peer: EverestPeer,
    module: ModuleProcess,
) -> None:
    transaction_id, key = start(peer)
    simulator.set_faults(http_status=500, paths=OCMF_PATHS, for_ms=WAIT_MS + 2000)
    retval = stop(peer, transaction_id)
    assert retval["status"] == "UNEXPECTED_ERROR", retval
    topic = f"{EXTERNAL_PREFIX}lem_dcbm/{MODULE_ID}/records/{transaction_id}"
    assert topic in retval["error"], retval
    assert simulator.state()["running_transaction"] is None

    [published] = peer.wait_for(lambda: peer.on_topic(topic), 30, "the late record")
    # A backend that subscribes later still gets it: the broker kept it.
    with EverestPeer(mosquitto.host, mosquitto.port) as backend:
        backend.subscribe(f"{EXTERNAL_PREFIX}#")
        [kept] = backend.wait_for(lambda: backend.on_topic(topic), 10, "the retained record")
    assert kept.retain
    assert kept.payload == published.payload
    message = published.json()
    jsonschema.validate(message, message_schema())
    record = message["signed_meter_value"]["signed_meter_data"]
    assert verify_ocmf(record, key)
    assert message["verification"] == {"signature_valid": True, "failed_checks": []}
    at_meter = [
        t for t in simulator.state()["transactions"] if t["transactionId"] == transaction_id
    ]
    assert record == at_meter[-1]["ocmf"]

    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "lem_dcbm",
            "records",
            "list",
            "--journal-dir",
            str(tmp_path / "journal"),
            "--module-id",
            MODULE_ID,
            "--json",
        ],
        capture_output=True,
        env=module_env(),
        timeout=30,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    listed = {row["transaction_id"]: row for row in json.loads(listing.stdout)}
    assert listed[transaction_id]["late"] is True


def test_record_answered_while_the_journal_could_not_be_written_is_not_published_again(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    """Exactly once: a restart never puts a record the stop answered with on the late road
    on its own; only EvseManager's start-up stop(id), whose answer OCPP drops, does.

    The journal directory is replaced by a file for the stop (every write then fails, as
    on a full or read-only disk) and put back before the restart.
    """
    values = simulator_config(simulator, journal_dir=str(tmp_path / "journal"))
    config = write_config(tmp_path / "config.yaml", values)
    env = {"EV_MQTT_EXTERNAL_PREFIX": EXTERNAL_PREFIX}
    journal = tmp_path / "journal" / MODULE_ID
    away = tmp_path / "journal-away"
    with start_module(tmp_path / "first", config, mosquitto.port, env=env) as first:
        peer.wait_for_var("public_key_ocmf", 1, timeout=20)
        transaction_id, _ = start(peer)
        journal.rename(away)
        journal.write_bytes(b"")
        answered = stop(peer, transaction_id)
        assert answered["status"] == "OK", f"{answered}\n{first.log()[-3000:]}"
        assert "journal write of the record" in first.log()
        first.kill()  # power lost right after the answer
    journal.unlink()
    away.rename(journal)
    topic = f"{EXTERNAL_PREFIX}lem_dcbm/{MODULE_ID}/records/{transaction_id}"
    with start_module(tmp_path / "second", config, mosquitto.port, env=env) as second:
        wait_until(
            lambda: any(e.transaction_id == transaction_id and e.ocmf for e in kept(journal)),
            timeout=30,
            what="the record fetched at start-up",
        )
        # A publication would follow the journal write at once; give it time to arrive.
        assert peer.wait_for_optional(lambda: peer.on_topic(topic), timeout=3) is None
        assert f"record of stopped transaction {transaction_id} fetched and kept" in second.log()
        # EvseManager asks again only when the power went before it took the answer in;
        # then OCPP drops its PowerLoss event, so the record also goes late, marked answered.
        again = stop(peer, transaction_id)
        assert again["signed_meter_value"] == answered["signed_meter_value"]
        [published] = peer.wait_for(lambda: peer.on_topic(topic), 30, "the late record")
        assert published.json()["answered"] is True
        assert second.terminate() == 0
    assert len(peer.on_topic(topic)) == 1


def kept(journal: Path) -> list[JournalEntry]:
    """The journal's entries, read without touching it."""
    return read_journal(journal)[0]


def test_power_loss_mid_session_the_recovery_stop_is_answered_and_published_marked(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    """The whole charger loses power mid-session; at boot EvseManager stops the id it kept.

    OCPP drops that TransactionFinished(PowerLoss), so its record also goes late, marked.
    """
    values = simulator_config(simulator, journal_dir=str(tmp_path / "journal"))
    config = write_config(tmp_path / "config.yaml", values)
    env = {"EV_MQTT_EXTERNAL_PREFIX": EXTERNAL_PREFIX}
    with start_module(tmp_path / "first", config, mosquitto.port, env=env) as first:
        peer.wait_for_var("public_key_ocmf", 1, timeout=20)
        transaction_id, key = start(peer)
        first.kill()  # power lost with the car charging; the meter keeps the transaction
    assert simulator.state()["running_transaction"] is not None
    topic = f"{EXTERNAL_PREFIX}lem_dcbm/{MODULE_ID}/records/{transaction_id}"
    with start_module(tmp_path / "second", config, mosquitto.port, env=env) as second:
        peer.wait_for_var("public_key_ocmf", 2, timeout=20)
        answered = stop(peer, transaction_id)  # cleanup_transactions_on_startup
        assert answered["status"] == "OK", f"{answered}\n{second.log()[-3000:]}"
        record = answered["signed_meter_value"]["signed_meter_data"]
        assert verify_ocmf(record, key)
        [published] = peer.wait_for(lambda: peer.on_topic(topic), 30, "the late record")
        message = published.json()
        jsonschema.validate(message, message_schema())
        assert message["answered"] is True
        assert message["signed_meter_value"] == answered["signed_meter_value"]
        # EvseManager's clean-up of anything else, then asked again: nothing more goes late.
        stop(peer, "")
        assert stop(peer, transaction_id)["signed_meter_value"] == answered["signed_meter_value"]
        assert second.terminate() == 0
    assert len(peer.on_topic(topic)) == 1
