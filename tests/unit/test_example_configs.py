"""The example configs in config/ load, and the commented one cannot drift from the manifest."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from lem_dcbm.config import ModuleConfig, load_everest_config_file, load_manifest
from lem_dcbm.meter.tls import normalize_pem, pinned_ssl_context

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))


def config_module(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    values: dict[str, Any] = document["active_modules"]["powermeter_1"]["config_module"]
    return values


def load(name: str) -> ModuleConfig:
    module_id, config = load_everest_config_file(CONFIG_DIR / name, None)
    assert module_id == "powermeter_1"
    return config


def test_the_three_examples_are_there() -> None:
    assert {path.name for path in EXAMPLES} >= {"real-meter.yaml", "simulator.yaml", "tls.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_loads_as_written(path: Path) -> None:
    module_id, config = load_everest_config_file(path, "powermeter_1")
    assert module_id == "powermeter_1"
    # Every value written in the file is the value the module runs with.
    for key, value in config_module(path).items():
        assert asdict(config)[key] == value, key


def test_real_meter_example_lists_every_manifest_key() -> None:
    manifest_keys = set(load_manifest()["config"])
    assert set(config_module(CONFIG_DIR / "real-meter.yaml")) == manifest_keys


def test_real_meter_example_shows_the_defaults() -> None:
    """Its header promises defaults everywhere except the required ip_address."""
    manifest = load_manifest()["config"]
    for key, value in config_module(CONFIG_DIR / "real-meter.yaml").items():
        if key != "ip_address":
            assert value == manifest[key]["default"], key


def test_simulator_example_targets_this_machine() -> None:
    config = load("simulator.yaml")
    assert config.ip_address == "127.0.0.1"
    assert not config.meter_tls_certificate
    assert config.journal_dir


def test_tls_example_certificate_is_usable_for_pinning() -> None:
    config = load("tls.yaml")
    assert config.port == 80
    pem = normalize_pem(config.meter_tls_certificate)
    assert pinned_ssl_context(pem).get_ca_certs()
