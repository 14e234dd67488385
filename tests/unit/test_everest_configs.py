"""EVerest's own configurations for its C++ LemDCBM400600 module load unchanged here.

A configuration that works with the C++ module must work with this one (drop-in), so
the configs EVerest ships and tests with are loaded as they are and their values checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lem_dcbm.config import config_from_mapping, load_everest_config_file
from lem_dcbm.runtime_config import ntp_servers

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "everest-configs"


def test_bringup_config_loads_with_ntp_switched_off() -> None:
    """Empty NTP servers with port 0 mean "no NTP", as in the C++ module."""
    module_id, config = load_everest_config_file(FIXTURES / "config-bringup-LEM.yaml", "lem")
    assert module_id == "lem"
    assert config.ip_address == "192.168.1.2"
    assert (config.cable_id, config.tariff_id, config.SC) == (6, 0, 1)
    assert (config.UV, config.UD) == ("user sw version", "some text")
    assert (config.temperature_warning_level_C, config.temperature_error_level_C) == (40, 50)
    assert config.ntp_server_1_port == 0
    assert ntp_servers(config) == ()


def test_standalone_test_config_loads_with_a_host_name_for_the_meter() -> None:
    module_id, config = load_everest_config_file(
        FIXTURES / "config-standalone-lemdcbm400600.yaml", "lem_dcbm_controller"
    )
    assert module_id == "lem_dcbm_controller"
    assert (config.ip_address, config.port) == ("localhost", 8000)


def test_end_to_end_test_ntp_host_names_reach_the_meter_settings() -> None:
    config = config_from_mapping(
        {
            "ip_address": "localhost",
            "port": 8000,
            "ntp_server_1_ip_addr": "test_ntp_1",
            "ntp_server_1_port": 124,
            "ntp_server_2_ip_addr": "test_ntp_2",
            "ntp_server_2_port": 125,
        }
    )
    servers = ntp_servers(config)
    assert [(server.ip_address, server.port) for server in servers] == [
        ("test_ntp_1", 124),
        ("test_ntp_2", 125),
    ]


@pytest.mark.parametrize(
    "values",
    [
        # The second server is ignored while the first is empty (the C++ manifest says so).
        {"ntp_server_2_ip_addr": "10.0.0.3", "ntp_server_2_port": 0},
        {"ntp_server_1_ip_addr": "", "ntp_server_1_port": 0},
    ],
)
def test_unused_ntp_ports_are_not_checked(values: dict[str, object]) -> None:
    config = config_from_mapping({"ip_address": "10.0.0.5", **values})
    assert ntp_servers(config) == ()
