"""Under a 2026 manager: answers in the types it published, config changes while running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import Broker, Simulator, simulator_config, start_module
from lem_dcbm.harness.transaction import transaction_request
from lem_dcbm.ocmf import parse_ocmf
from tests.integration import test_module_modes
from tests.integration.test_module_modes import manager_env
from tests.support.everest_peer import EverestPeer, parameters_from_values
from tests.unit.test_framework_types import release_types, release_validator

pytestmark = pytest.mark.integration

#: The fake manager and consumer of the manager-mode tests.
peer = test_module_modes.peer


def test_a_2026_02_manager_gets_its_start_answer_without_signed_meter_value(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    peer.act_as_manager("2026", parameters_from_values(simulator_config(simulator)))
    peer.publish_types(release_types("2026.02.1"))
    module = start_module(
        tmp_path, None, mosquitto.port, env=manager_env(mosquitto), entry="module.py"
    )
    try:
        peer.wait_for(lambda: peer.module_ready, 20, "ModuleReady")
        peer.clear_retained()  # as the manager does before global ready
        peer.send_global_ready()
        peer.wait_for_var("powermeter", 1, timeout=10)
        request = transaction_request("tx-framework-types")
        started = peer.call("start_transaction", {"value": request}, timeout=15)
        assert "error" not in started, started
        retval = started["retval"]
        assert retval["status"] == "OK", retval
        # signed_start_value is on: the begin record is read, but 2026.02.1 has no place
        # for it, and with validate_schema its manager would refuse the whole answer.
        assert "signed_meter_value" not in retval
        assert (
            list(release_validator("2026.02.1", "TransactionStartResponse").iter_errors(retval))
            == []
        )
        stopped = peer.call("stop_transaction", {"transaction_id": request["transaction_id"]}, 15)
        stop = stopped["retval"]
        assert stop["status"] == "OK", stop
        assert stop["signed_meter_value"]["signed_meter_data"].startswith("OCMF|")
        assert (
            list(release_validator("2026.02.1", "TransactionStopResponse").iter_errors(stop)) == []
        )
        assert "answers without /signed_meter_value" in module.log()
        peer.send_shutdown()
        assert module.process.wait(10) == 0, module.log()
    finally:
        if module.process.poll() is None:
            module.kill()


def cable_of(answer: dict[str, Any]) -> int:
    """The cable compensation id in a stop answer's signed record."""
    record = parse_ocmf(answer["retval"]["signed_meter_value"]["signed_meter_data"])
    cable: int = record.payload["RD"][0]["UC"]["UI"]
    return cable


def test_a_2026_manager_changes_the_config_while_a_transaction_runs(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    values = simulator_config(simulator, cable_id=1)
    peer.act_as_manager("2026", parameters_from_values(values))
    module = start_module(
        tmp_path, None, mosquitto.port, env=manager_env(mosquitto), entry="module.py"
    )
    try:
        peer.wait_for(lambda: peer.module_ready, 20, "ModuleReady")
        peer.clear_retained()
        peer.send_global_ready()
        peer.wait_for_var("powermeter", 1, timeout=10)
        first = transaction_request("tx-runtime-1")
        assert peer.call("start_transaction", {"value": first}, 15)["retval"]["status"] == "OK"

        accepted = peer.set_config("cable_id", "5")
        assert accepted["status"] == "Ok"
        assert accepted["response"] == {"status": "Accepted", "status_info": ""}
        rejected = peer.set_config("cable_id", "9")
        assert rejected["response"]["status"] == "Rejected"
        assert "config key 'cable_id': must be <= 7, got 9" in rejected["status_info"]
        reboot = peer.set_config("port", "8443")
        assert reboot["response"]["status"] == "RebootRequired"
        assert "'port' needs a new connection" in reboot["response"]["status_info"]

        stop = peer.call("stop_transaction", {"transaction_id": first["transaction_id"]}, 15)
        assert cable_of(stop) == 1  # the running transaction keeps what it started with
        second = transaction_request("tx-runtime-2")
        assert peer.call("start_transaction", {"value": second}, 15)["retval"]["status"] == "OK"
        stop = peer.call("stop_transaction", {"transaction_id": second["transaction_id"]}, 15)
        assert cable_of(stop) == 5
        # The port change waits for a restart: the module still talks to the simulator.
        peer.wait_for_var("powermeter", len(peer.vars("powermeter")) + 1, timeout=10)
        peer.send_shutdown()
        assert module.process.wait(10) == 0, module.log()
    finally:
        if module.process.poll() is None:
            module.kill()
