"""Two module ids configured on one meter: each sees the other, neither ends or bills the other's.

Real mosquitto, the simulator over HTTP, two module processes with different module ids
(and journals) pointed at the same simulated meter, each with its own EvseManager peer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import (
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.harness import transaction_request as request
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXTERNAL_PREFIX = "ext/"
EVSE_A = "DE*LEM*E0001"
EVSE_B = "DE*LEM*E0002"


def start_pair(
    stack: ExitStack, tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> dict[str, tuple[ModuleProcess, EverestPeer]]:
    """Module pm_a, then pm_b, both on ``simulator``; each with its EvseManager peer."""
    pair: dict[str, tuple[ModuleProcess, EverestPeer]] = {}
    for module_id in ("pm_a", "pm_b"):
        workdir = tmp_path / module_id
        workdir.mkdir()
        values = simulator_config(simulator, journal_dir=str(tmp_path / "journals"))
        config = write_config(workdir / "config.yaml", values, module_id=module_id)
        peer = stack.enter_context(EverestPeer(mosquitto.host, mosquitto.port, module_id=module_id))
        peer.subscribe(f"{EXTERNAL_PREFIX}#")
        module = start_module(
            workdir, config, mosquitto.port, env={"EV_MQTT_EXTERNAL_PREFIX": EXTERNAL_PREFIX}
        )
        stack.callback(_finish, module)
        peer.wait_for_var("public_key_ocmf", 1, timeout=30)
        pair[module_id] = (module, peer)
    return pair


def _finish(module: ModuleProcess) -> None:
    assert module.terminate() == 0, module.log()[-3000:]


@pytest.fixture
def pair(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> Iterator[dict[str, tuple[ModuleProcess, EverestPeer]]]:
    with ExitStack() as stack:
        yield start_pair(stack, tmp_path, simulator, mosquitto)


def start(peer: EverestPeer, transaction_id: str, evse_id: str) -> dict[str, Any]:
    answer = peer.call(
        "start_transaction", {"value": request(transaction_id, evse_id=evse_id)}, timeout=20
    )
    retval: dict[str, Any] = answer["retval"]
    return retval


def stop(peer: EverestPeer, transaction_id: str) -> dict[str, Any]:
    answer = peer.call("stop_transaction", {"transaction_id": transaction_id}, timeout=30)
    retval: dict[str, Any] = answer["retval"]
    return retval


def running(simulator: Simulator) -> str | None:
    tx = simulator.state()["running_transaction"]
    return None if tx is None else str(tx)


def claimed_twice(module: ModuleProcess, this: str, other: str) -> list[str]:
    return [
        line
        for line in module.log().splitlines()
        if "is claimed by two modules: this one, " + this in line and f"and {other} (" in line
    ]


def test_two_modules_on_one_meter_neither_ends_nor_bills_the_others_session(
    simulator: Simulator, pair: dict[str, tuple[ModuleProcess, EverestPeer]]
) -> None:
    (module_a, peer_a), (module_b, peer_b) = pair["pm_a"], pair["pm_b"]
    # Both say so, in one line naming both: pm_b at its start-up, pm_a when pm_b appears.
    wait_until(lambda: claimed_twice(module_b, "pm_b", "pm_a"), timeout=10, what="pm_b's line")
    wait_until(lambda: claimed_twice(module_a, "pm_a", "pm_b"), timeout=10, what="pm_a's line")
    assert len(claimed_twice(module_b, "pm_b", "pm_a")) == 1

    tx_a, tx_b = f"A-{uuid.uuid4().hex[:8]}", f"B-{uuid.uuid4().hex[:8]}"
    assert start(peer_a, tx_a, EVSE_A)["status"] == "OK"
    refused = start(peer_b, tx_b, EVSE_B)
    assert refused["status"] == "UNEXPECTED_ERROR", refused
    assert f"transaction {tx_a} (evseId '{EVSE_A}'" in refused["error"]
    assert f"stop-foreign --transaction-id {tx_a}" in refused["error"]
    assert tx_a in (running(simulator) or "")
    # EvseManager B's boot-time clean-up does not end it either.
    assert stop(peer_b, "")["status"] == "UNEXPECTED_ERROR"
    assert tx_a in (running(simulator) or "")
    raised = peer_b.wait_for(
        lambda: [e for e in peer_b.errors_raised if "ForeignTransaction" in str(e)],
        10,
        "ForeignTransaction on pm_b",
    )
    assert tx_a in str(raised[0])

    # A's customer gets A's record from A, and only from A.
    stopped = stop(peer_a, tx_a)
    assert stopped["status"] == "OK", stopped
    assert tx_a in stopped["signed_meter_value"]["signed_meter_data"]
    # Then B may charge, and A leaves B's session alone the same way.
    assert start(peer_b, tx_b, EVSE_B)["status"] == "OK"
    assert start(peer_a, f"A2-{uuid.uuid4().hex[:8]}", EVSE_A)["status"] == "UNEXPECTED_ERROR"
    assert stop(peer_a, "")["status"] == "UNEXPECTED_ERROR"
    stopped_b = stop(peer_b, tx_b)
    assert stopped_b["status"] == "OK", stopped_b
    assert tx_b in stopped_b["signed_meter_value"]["signed_meter_data"]
    # No record on anybody's late road: each record went to its own EvseManager only.
    for peer in (peer_a, peer_b):
        assert peer.on_topic_prefix(EXTERNAL_PREFIX) == []
    assert "left running at the meter" not in module_a.log() + module_b.log()


def test_copied_config_with_the_same_evse_id_is_refused_while_the_other_claims(
    simulator: Simulator, pair: dict[str, tuple[ModuleProcess, EverestPeer]]
) -> None:
    """Same evseId in both (a copy-pasted block): only the claim tells the sessions apart."""
    (_module_a, peer_a), (module_b, peer_b) = pair["pm_a"], pair["pm_b"]
    wait_until(lambda: claimed_twice(module_b, "pm_b", "pm_a"), timeout=10, what="pm_b's line")
    tx_a = f"A-{uuid.uuid4().hex[:8]}"
    assert start(peer_a, tx_a, EVSE_A)["status"] == "OK"
    refused = start(peer_b, f"B-{uuid.uuid4().hex[:8]}", EVSE_A)
    assert refused["status"] == "UNEXPECTED_ERROR"
    assert "pm_a also claim this meter" in refused["error"]
    assert tx_a in (running(simulator) or "")
    assert stop(peer_a, tx_a)["status"] == "OK"


def test_forged_claims_neither_end_a_module_nor_stop_its_billing(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> None:
    """Any client can publish a claim: garbage of any shape is a warning, never an outage."""
    values = simulator_config(simulator, journal_dir=str(tmp_path / "journals"))
    config = write_config(tmp_path / "config.yaml", values, module_id="pm_a")
    serial = "12024072805"
    forged = {
        "forged_1": b"x" * 100_000,
        "forged_2": b"[" * 1000,
        "forged_3": b'{"pid": 1e999, "host": null, "address": ["\\u0000"]}',
        "%2F%23": b"not json",
    }
    with (
        EverestPeer(mosquitto.host, mosquitto.port, module_id="pm_a") as peer,
        start_module(tmp_path / "run", config, mosquitto.port) as module,
    ):
        peer.wait_for_var("public_key_ocmf", 1, timeout=30)
        tx = f"A-{uuid.uuid4().hex[:8]}"
        assert start(peer, tx, EVSE_A)["status"] == "OK"
        for name, payload in forged.items():
            peer.send_raw(f"everest/lem_dcbm/meters/{serial}/{name}", payload, retain=True)
        wait_until(
            lambda: (
                len(
                    [line for line in module.log().splitlines() if "claimed by two modules" in line]
                )
                == len(forged)
            ),
            timeout=10,
            what="one line per forged claim",
        )
        assert "and forged_1 (a claim of 100000 bytes, not read)" in module.log()
        assert "and forged_2 (a claim that is not JSON)" in module.log()
        assert "and forged_3 (address ?, pid ?, host ?)" in module.log()
        assert "and /# (a claim that is not JSON)" in module.log()
        stopped = stop(peer, tx)
        assert stopped["status"] == "OK", stopped
        assert tx in stopped["signed_meter_value"]["signed_meter_data"]
        # Withdrawn claims are forgotten.
        for name in forged:
            peer.send_raw(f"everest/lem_dcbm/meters/{serial}/{name}", b"", retain=True)
        wait_until(
            lambda: "no longer claims meter" in module.log(), timeout=10, what="a withdrawal"
        )
        assert module.process.poll() is None
        assert module.terminate() == 0
