"""Ways the module is started: by the EVerest manager, from a C++-era config, with bad input."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    Simulator,
    run_to_exit,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from tests.support.everest_peer import EverestPeer, parameters_from_values

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


def manager_env(broker: Broker) -> dict[str, str]:
    return {
        "EV_MODULE": MODULE_ID,
        "EV_PREFIX": "/opt/everest",
        "EV_MQTT_EVEREST_PREFIX": "everest/",
        "EV_MQTT_EXTERNAL_PREFIX": "",
        "EV_MQTT_BROKER_HOST": broker.host,
        "EV_MQTT_BROKER_PORT": str(broker.port),
    }


@pytest.mark.parametrize("generation", ["2026", "0.25"])
def test_under_the_manager(
    generation: str,
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: Broker,
    peer: EverestPeer,
) -> None:
    values = simulator_config(simulator)
    peer.act_as_manager(generation, parameters_from_values(values))
    module = start_module(
        tmp_path, None, mosquitto.port, env=manager_env(mosquitto), entry="module.py"
    )
    try:
        peer.wait_for(lambda: peer.module_ready, 20, "ModuleReady")
        expected_type = "ConfigurationResponse" if generation == "2026" else "GetConfigResponse"
        assert peer.config_requests, "the module never asked for its configuration"
        metadata = peer.metadata[-1]
        assert metadata["msg_type"] == expected_type
        assert metadata["data"]["provides"] == {"main": {"interface": "powermeter"}}
        assert peer.module_ready[-1] == {"msg_type": "ModuleReady", "data": True}
        # Ready, but no global ready yet: nothing may be published. The meter answers in
        # milliseconds, so a publication would come well within this wait.
        assert not peer.wait_for_optional(lambda: peer.vars("powermeter"), 2.0)
        peer.clear_retained()
        peer.send_global_ready()
        peer.wait_for_var("powermeter", 2, timeout=10)
        if generation == "2026":
            peer.send_shutdown()
            assert module.process.wait(10) == 0, module.log()
        else:
            assert module.terminate() == 0, module.log()
    finally:
        if module.process.poll() is None:
            module.kill()


def cpp_config(sim: Simulator) -> dict[str, Any]:
    """Every key of the C++ module with its default, as an existing charger's config has."""
    manifest = yaml.safe_load((FIXTURES / "LemDCBM400600-manifest.yaml").read_text())
    values = {key: spec["default"] for key, spec in manifest["config"].items() if "default" in spec}
    values.update(ip_address=sim.host, port=sim.port)
    return values


def test_config_written_for_the_cpp_module_starts_unchanged(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    config = tmp_path / "config.yaml"
    document = {
        "settings": {"telemetry_enabled": True},
        "active_modules": {
            "lem_dcbm_controller": {
                "config_module": cpp_config(simulator),
                "module": "LemDCBM400600",
            }
        },
    }
    config.write_text(yaml.safe_dump(document))
    peer_module = EverestPeer(mosquitto.host, mosquitto.port, module_id="lem_dcbm_controller")
    with peer_module:
        module = start_module(tmp_path, config, mosquitto.port)
        try:
            samples = peer_module.wait_for_var("powermeter", 2, timeout=20)
            assert samples[0].value["meter_id"] == simulator.state()["meter_id"]
        finally:
            assert module.terminate() == 0, module.log()


BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("missing ip_address", {"ip_address": None}, "ip_address"),
    ("wrong type", {"port": "eighty"}, "port"),
    ("out of range", {"command_timeout_ms": 50}, "command_timeout_ms"),
    ("unknown key", {"ip_adress": "10.0.0.1"}, "ip_adress"),
    (
        "unparsable certificate",
        {"meter_tls_certificate": "-----BEGIN CERTIFICATE-----xyz"},
        "meter_tls_certificate",
    ),
    ("bad IT", {"IT": 18}, "IT"),
    ("bad timezone", {"meter_timezone": "+25:00"}, "meter_timezone"),
    ("bad dst", {"meter_dst": "{not json"}, "meter_dst"),
]


@pytest.mark.parametrize(("case", "change", "key"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, case: str, change: dict[str, Any], key: str
) -> None:
    values: dict[str, Any] = {"ip_address": "127.0.0.1", "port": 80}
    for name, value in change.items():
        if value is None:
            values.pop(name)
        else:
            values[name] = value
    config = write_config(tmp_path / "config.yaml", values)
    argv = [sys.executable, "-m", "lem_dcbm", "run", "--config", str(config)]
    code, stderr = run_to_exit([*argv, "--broker-host", "127.0.0.1", "--broker-port", "1"])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert key in lines[0], lines[0]


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    code, stderr = run_to_exit(
        [sys.executable, "-m", "lem_dcbm", "run", "--config", str(tmp_path / "nope.yaml")]
    )
    assert code == 2
    assert "nope.yaml" in stderr


def test_watch_and_call_against_a_running_module(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    config = write_config(tmp_path / "config.yaml", simulator_config(simulator))
    module = start_module(tmp_path, config, mosquitto.port)
    broker = ["--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port)]
    tool = [sys.executable, "-m", "lem_dcbm"]
    try:
        peer.wait_for_var("powermeter", 1, timeout=20)
        watch = run_to_exit([*tool, "watch", "--module-id", MODULE_ID, "--count", "2", *broker])
        assert watch[0] == 0, watch[1]
        start = run_to_exit(
            [
                *tool,
                "call",
                "start_transaction",
                "--module-id",
                MODULE_ID,
                "--transaction-id",
                "cli-tx-1",
                *broker,
            ]
        )
        assert start[0] == 0, start[1]
        wait_until(lambda: simulator.state()["running_transaction"], 5, what="meter running")
        stop = run_to_exit(
            [
                *tool,
                "call",
                "stop_transaction",
                "--module-id",
                MODULE_ID,
                "--transaction-id",
                "cli-tx-1",
                *broker,
            ]
        )
        assert stop[0] == 0, stop[1]
        none_running = run_to_exit(
            [
                *tool,
                "call",
                "stop_transaction",
                "--module-id",
                MODULE_ID,
                "--any",
                *broker,
            ]
        )
        assert none_running[0] == 1
    finally:
        assert module.terminate() == 0, module.log()


def test_module_waits_for_a_broker_that_comes_up_late(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> None:
    mosquitto.stop()
    config = write_config(tmp_path / "config.yaml", simulator_config(simulator))
    module = start_module(tmp_path, config, mosquitto.port)
    try:
        wait_until(lambda: "retrying every" in module.log(), 20, what="the broker outage log")
        assert module.process.poll() is None
        mosquitto.start()
        with EverestPeer(mosquitto.host, mosquitto.port) as late_peer:
            late_peer.wait_for_var("powermeter", 1, timeout=20)
    finally:
        assert module.terminate() == 0, module.log()


def test_silent_manager_is_a_clear_failure(tmp_path: Path, mosquitto: Broker) -> None:
    module = start_module(
        tmp_path, None, mosquitto.port, env=manager_env(mosquitto), entry="module.py"
    )
    code = module.process.wait(60)
    assert code == 1, module.log()
    assert "no configuration from the EVerest manager" in module.log()
