"""lem-dcbm under the real EVerest manager (0.25 and 2026), with an everestpy EvseManager.

Optional: each framework's test runs only when its build is named by
``LEM_DCBM_EVEREST_025_PREFIX`` / ``LEM_DCBM_EVEREST_2026_PREFIX`` and is skipped with one
line otherwise (CI has no builds). How to build and run: docs/everest-real.md.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from tests.real_everest.everest_run import METER_ID, MODULE_NAME, ManagerRun, module_source
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.everest_real, pytest.mark.timeout(300)]

BOTH = pytest.mark.parametrize("everest_build", ["0.25", "2026"], indirect=True)
#: Start-up of the manager, both modules and the role's sequence, on a loaded machine.
SEQUENCE_TIMEOUT_S = 90.0
ERROR_TIMEOUT_S = 15.0
#: 2026: "Module powermeter (pid 123) shutdown [12ms] with status: ..."
_SHUTDOWN_LINE = re.compile(r"Module (\S+) \(pid \d+\) shutdown \[(\d+)ms\] with status: (.*)$")


#: The framework's own warnings and errors (the modules' lines have another format).
_FRAMEWORK_PROBLEM = re.compile(r"\[(WARN|ERRO|CRIT)\]")


def framework_problems(run: ManagerRun) -> list[str]:
    """The manager's and everestpy's warning, error and critical lines, e.g. a failed validation."""
    return [line for line in run.manager_log().splitlines() if _FRAMEWORK_PROBLEM.search(line)]


def calls_by_step(observations: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The role's command calls, by step name; none of them may have raised."""
    calls = {call["step"]: call for call in observations["calls"]}
    broken = {step: call["exception"] for step, call in calls.items() if "exception" in call}
    assert not broken, f"command calls failed in the framework: {broken}"
    return calls


def report(run: ManagerRun, **timings: float) -> None:
    """One line per run for docs/everest-real.md (shown with ``-s`` or ``-rA``)."""
    parts = " ".join(f"{name}={seconds:.2f}s" for name, seconds in timings.items())
    print(
        f"\n[everest_real] framework={run.build.framework} build={run.build.origin()!r} "
        f"install={run.folders.install_seconds:.1f}s {parts}"
    )


def assert_module_exited_cleanly(run: ManagerRun) -> None:
    """lem-dcbm's process ended with exit code 0 (as the 2026 manager or the reaper saw it)."""
    if run.build.graceful_shutdown:
        log = run.manager_log()
        lines = [m for line in log.splitlines() if (m := _SHUTDOWN_LINE.search(line))]
        mine = [m.group(3).strip() for m in lines if m.group(1) == METER_ID]
        assert mine == ["exit_code=0"], f"{METER_ID}'s shutdown: {mine}; {run.tail()}"
        assert "All modules shut down properly" in log, run.tail()
        assert "did not shut down cleanly" not in log, run.tail()
    else:
        code = run.module_exit_code(MODULE_NAME)
        assert code == 0, f"lem-dcbm exit code {code}; exits {run.exits()}; {run.tail()}"


@BOTH
def test_evse_manager_sequence_errors_and_shutdown(manager_run: ManagerRun) -> None:
    run = manager_run.start()
    obs = run.wait_for(
        "the role's boot stops and transaction", lambda d: d["phase"] == "done", SEQUENCE_TIMEOUT_S
    )
    sequence_s = time.monotonic() - run.started_at
    calls = calls_by_step(obs)

    # Boot-time clean-up as Charger.cpp does it: the remembered id, then "" (stop all).
    # Nothing runs on a fresh meter: both are refused with the reason, which EvseManager
    # logs as "probably just not active anymore" and goes on; the answers passed the
    # framework's schema validation on the way (validate_schema: true).
    remembered = calls["boot_stop_remembered"]["result"]
    assert remembered["status"] == "UNEXPECTED_ERROR", remembered
    assert "remembered-before-restart" in remembered["error"], remembered
    assert calls["boot_stop_all"]["result"] == {
        "status": "UNEXPECTED_ERROR",
        "error": "no transaction running",
    }

    start = calls["start"]["result"]
    assert start["status"] == "OK", start
    stop = calls["stop"]["result"]
    assert stop["status"] == "OK", stop
    record = stop["signed_meter_value"]["signed_meter_data"]
    keys = obs["public_keys"]
    assert keys, "public_key_ocmf never reached the role"
    assert verify_ocmf(record, keys[-1]), "the stop record does not verify with public_key_ocmf"
    assert stop["signed_meter_value"]["public_key"] == keys[-1]
    readings = parse_ocmf(record).payload["RD"]
    # A whole transaction: a begin and an end reading.
    assert [r["TX"] for r in readings if "TX" in r] == ["B", "E"], readings
    # The role waits for two publications between start and stop (and records it if not).
    assert not obs["failures"], obs["failures"]
    assert obs["powermeter_count"] >= 2, obs

    # A meter that stops answering: CommunicationFault raised, then cleared when it is back.
    raised_before = len(obs["errors_raised"])
    fault_at = time.monotonic()
    run.simulator.set_faults(http_status=503)
    obs = run.wait_for(
        "CommunicationFault raised",
        lambda d: any(e["type"].endswith("/CommunicationFault") for e in d["errors_raised"]),
        ERROR_TIMEOUT_S,
    )
    raise_s = time.monotonic() - fault_at
    raised = [e for e in obs["errors_raised"][raised_before:] if "CommunicationFault" in e["type"]]
    assert raised[0]["type"] == "powermeter/CommunicationFault", raised
    assert raised[0]["origin"] == METER_ID
    run.simulator.clear_faults()
    back_at = time.monotonic()
    run.wait_for(
        "CommunicationFault cleared",
        lambda d: any(e["type"].endswith("/CommunicationFault") for e in d["errors_cleared"]),
        ERROR_TIMEOUT_S,
    )
    clear_s = time.monotonic() - back_at

    # The end: --graceful-shutdown on 2026 (the shutdown message), SIGTERM on 0.25.
    stop_at = time.monotonic()
    run.shutdown()
    shutdown_s = time.monotonic() - stop_at
    assert_module_exited_cleanly(run)
    # Nothing the module sent (vars, answers, errors) upset the framework on the way.
    assert framework_problems(run) == []
    report(
        run,
        sequence=sequence_s,
        start=calls["start"]["seconds"],
        stop=calls["stop"]["seconds"],
        error_raised=raise_s,
        error_cleared=clear_s,
        shutdown=shutdown_s,
    )


@BOTH
def test_transaction_remembered_across_a_power_loss_is_billed(
    manager_run: ManagerRun, tmp_path: Path
) -> None:
    first = manager_run
    first.role_config = {"leave_running": True}
    first.start()
    obs = first.wait_for(
        "a transaction left running", lambda d: d["phase"] == "left_running", SEQUENCE_TIMEOUT_S
    )
    started = calls_by_step(obs)["start"]
    assert started["result"]["status"] == "OK", started
    transaction_id = started["args"]["value"]["transaction_id"]
    # The charger loses power; the meter (a device of its own) keeps the transaction.
    first.power_loss()
    second = ManagerRun(
        first.build,
        tmp_path / "everest-after-power-loss",
        first.folders,
        first.broker,
        first.simulator,
        role_config={"remembered_transaction_id": transaction_id},
        journal_dir=first.workdir / "journal",
    )
    try:
        second.start()
        obs = second.wait_for(
            "the boot stops after the power loss",
            lambda d: d["phase"] == "done",
            SEQUENCE_TIMEOUT_S,
        )
        calls = calls_by_step(obs)
        # EvseManager's stop(<remembered id>) bills the transaction that ran at the cut...
        remembered = calls["boot_stop_remembered"]["result"]
        assert remembered["status"] == "OK", remembered
        record = remembered["signed_meter_value"]["signed_meter_data"]
        assert verify_ocmf(record, obs["public_keys"][-1]), record
        readings = parse_ocmf(record).payload["RD"]
        assert [r["TX"] for r in readings if "TX" in r] == ["B", "E"], readings
        # ...so stop("") finds nothing left, and the next transaction works as ever.
        assert calls["boot_stop_all"]["result"] == {
            "status": "UNEXPECTED_ERROR",
            "error": "no transaction running",
        }
        assert calls["stop"]["result"]["status"] == "OK", calls["stop"]
        second.shutdown()
        assert_module_exited_cleanly(second)
        report(second, remembered_stop=calls["boot_stop_remembered"]["seconds"])
    finally:
        second.kill()


# --- runtime configuration (2026) -------------------------------------------------------


def read_write_keys(manifest: Path) -> set[str]:
    """The config keys ``manifest.yaml`` declares ``mutability: ReadWrite``."""
    config = yaml.safe_load(manifest.read_text())["config"]
    return {key for key, spec in config.items() if spec.get("mutability") == "ReadWrite"}


#: (parameter, value, what the manager must answer the caller, what the module answers it).
SET_REQUESTS = [
    # Applied at once.
    ("tariff_id", "3", "Accepted", "Accepted"),
    # An integer above the maximum 4: the manager checks the type only and asks the
    # module, which refuses with the reason; the 2026 framework then answers the caller
    # RebootRequired ("Runtime change rejected by module"), with the value persisted.
    ("tariff_id", "9", "RebootRequired", "Rejected"),
    # Not an integer: refused by the manager with the reason; the module is not asked.
    ("tariff_id", "three", "Rejected", None),
    # A new connection: after a restart (the module is asked only if the key is ReadWrite).
    ("ip_address", "192.0.2.10", "RebootRequired", "RebootRequired"),
]


def module_set_answers(peer: EverestPeer) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The manager's forwarded set requests paired with the module's set responses."""
    base = f"everest/modules/{METER_ID}/config"
    requests = [m.json()["data"] for m in peer.on_topic(f"{base}/set_request")]
    responses = [m.json()["data"] for m in peer.on_topic(f"{base}/set_response")]
    return list(zip(requests, responses, strict=False))


@pytest.mark.parametrize("everest_build", ["2026"], indirect=True)
def test_runtime_config_change(manager_run: ManagerRun) -> None:
    writable = read_write_keys(module_source() / "manifest.yaml")
    if "tariff_id" not in writable:
        pytest.skip("manifest.yaml declares tariff_id without mutability: ReadWrite")
    run = manager_run
    run.set_requests = [(name, value) for name, value, _, _ in SET_REQUESTS]
    # Listens to what the manager forwards to the module and what the module answers.
    with EverestPeer(
        run.broker.host, run.broker.port, module_id=METER_ID, peer_id="observer"
    ) as peer:
        run.start()
        obs = run.wait_for("the set requests", lambda d: d["phase"] == "done", SEQUENCE_TIMEOUT_S)
        results = obs["set_results"]
        assert len(results) == len(SET_REQUESTS), results
        for entry, (name, value, expected, _) in zip(results, SET_REQUESTS, strict=True):
            assert "exception" not in entry, entry
            assert (entry["parameter"], entry["value"]) == (name, value)
            assert entry["result"]["status"] == "Ok", entry
            assert entry["result"]["set_status"] == expected, entry
        accepted, module_rejected, rejected, reboot = results
        # Applied: the manager's own value is the new one; a refused one leaves it so.
        assert str(accepted["after"]["value"]) == "3", accepted
        assert str(module_rejected["after"]["value"]) == "3", module_rejected
        assert rejected["result"]["status_info"], rejected  # the parse error
        # What the module itself was asked and answered.
        asked = [
            (name, value, answer)
            for name, value, _, answer in SET_REQUESTS
            if answer is not None and (name in writable)
        ]
        exchanged = module_set_answers(peer)
        assert len(exchanged) == len(asked), exchanged
        for (request, response), (name, value, answer) in zip(exchanged, asked, strict=True):
            identifier = request["identifier"]
            assert (identifier["configuration_parameter_name"], request["value"]) == (name, value)
            assert response["response"]["status"] == answer, response
            if answer == "Rejected":
                reason = response.get("status_info") or response["response"].get("status_info")
                assert name in reason, response
        # The module keeps publishing from the meter it has (the new address waits).
        count = reboot["powermeter_count"]
        run.wait_for(
            "publications after the set requests", lambda d: d["powermeter_count"] > count, 10
        )
    stop_at = time.monotonic()
    run.shutdown()
    shutdown_s = time.monotonic() - stop_at
    assert_module_exited_cleanly(run)
    timings = {f"set_{e['parameter']}={e['value']}": e["seconds"] for e in results}
    report(run, **timings, shutdown=shutdown_s)
