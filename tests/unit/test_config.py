"""Configuration: manifest-driven validation, the EVerest file format, manager parameters."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lem_dcbm.config import (
    BrokerSettings,
    ModuleConfig,
    broker_settings,
    config_from_manager_parameters,
    config_from_mapping,
    config_schema,
    load_everest_config_file,
    load_manifest,
)
from lem_dcbm.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "meter")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ip_address", "fd00::5"),
        ("ip_address", "[fd00::5]"),
        ("ip_address", "meter-1.charger.local"),
        ("ntp_server_1_ip_addr", "test_ntp_1"),
        ("ntp_server_2_ip_addr", "pool.ntp.org"),
        ("ntp_server_1_ip_addr", "2001:db8::123"),
    ],
)
def test_ipv6_addresses_and_host_names_are_accepted(key: str, value: str) -> None:
    values: dict[str, Any] = {"ip_address": "10.0.0.5", key: value}
    assert getattr(config_from_mapping(values), key) == value


def test_defaults_of_the_dataclass_are_the_manifest_defaults() -> None:
    manifest = load_manifest()
    by_name = {f.name: f for f in dataclasses.fields(ModuleConfig)}
    assert set(by_name) == set(manifest["config"])
    for key, entry in manifest["config"].items():
        if "default" in entry:
            assert by_name[key].default == entry["default"], key
        else:
            assert by_name[key].default is dataclasses.MISSING, key


def test_schema_from_manifest() -> None:
    schema = config_schema(load_manifest())
    assert schema["required"] == ["ip_address"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["IT"] == {
        "type": "integer",
        "minimum": -1,
        "maximum": 17,
        "default": -1,
    }
    assert schema["properties"]["api_version"]["enum"] == ["auto", "v1", "v2"]


def test_minimal_config_fills_every_default() -> None:
    config = config_from_mapping({"ip_address": "192.168.10.20"})
    assert config == ModuleConfig(ip_address="192.168.10.20")
    assert config.port == 80
    assert config.temperature_hysteresis_K == 3.0
    assert isinstance(config.temperature_warning_level_C, float)
    assert config.meter_dst_settings["offset"] == 60
    assert config.meter_tls_certificate == ""


def test_cpp_style_config_with_every_cpp_default_loads() -> None:
    cpp = yaml.safe_load((FIXTURES / "LemDCBM400600-manifest.yaml").read_text())
    values = {key: entry["default"] for key, entry in cpp["config"].items() if "default" in entry}
    values["ip_address"] = "10.0.0.5"
    config = config_from_mapping(values)
    assert config.command_timeout_ms == 5000
    assert config.IT == -1


def test_all_values_set() -> None:
    config = config_from_mapping(
        {
            "ip_address": "meter.local",
            "port": 443,
            "ntp_server_1_ip_addr": "10.0.0.1",
            "ntp_server_2_ip_addr": "10.0.0.2",
            "meter_timezone": "-03:30",
            "IT": 17,
            "SC": 2,
            "UV": "1.2.3",
            "UD": "x",
            "temperature_error_level_C": 80,
            "api_version": "v2",
            "signed_start_value": False,
            "error_namespace": "generic",
            "publish_interval_ms": 200,
            "meter_tls_certificate": _self_signed_pem(),
        }
    )
    assert config.temperature_error_level_C == 80.0
    assert config.api_version == "v2"
    assert config.meter_tls_certificate.startswith("-----BEGIN CERTIFICATE-----")


NTP_BOTH = {"ntp_server_1_ip_addr": "10.0.0.2", "ntp_server_2_ip_addr": "10.0.0.3"}

BAD = [
    ({}, "ip_address", "missing"),
    ({"ip_address": ""}, "ip_address", "not an IP address"),
    ({"ip_address": "http://10.0.0.1/"}, "ip_address", "not an IP address"),
    ({"ip_address": "10.0.0.1:80"}, "ip_address", "not an IP address"),
    ({"ip_address": "[fd00::5]:80"}, "ip_address", "not an IP address"),
    ({"ip_address": "10.0.0.300"}, "ip_address", "not an IP address"),
    ({"ip_address": 10}, "ip_address", "expected string"),
    ({"port": "80"}, "port", "expected integer"),
    ({"port": True}, "port", "expected integer"),
    ({"port": 8.5}, "port", "expected integer"),
    ({"port": 0}, "port", "1 to 65535"),
    ({"port": 70000}, "port", "1 to 65535"),
    ({**NTP_BOTH, "ntp_server_2_port": -1}, "ntp_server_2_port", "1 to 65535"),
    ({**NTP_BOTH, "ntp_server_1_port": 0}, "ntp_server_1_port", "1 to 65535"),
    ({"command_timeout_ms": 999}, "command_timeout_ms", ">= 1000"),
    ({"command_timeout_ms": 20001}, "command_timeout_ms", "<= 20000"),
    ({"IT": 18}, "IT", "<= 17"),
    ({"IT": -2}, "IT", ">= -1"),
    ({"temperature_hysteresis_K": -0.5}, "temperature_hysteresis_K", ">= 0"),
    ({"temperature_warning_level_C": "hot"}, "temperature_warning_level_C", "expected number"),
    ({"publish_interval_ms": 100}, "publish_interval_ms", ">= 200"),
    ({"api_version": "v3"}, "api_version", "one of auto, v1, v2"),
    ({"error_namespace": "Powermeter"}, "error_namespace", "one of"),
    ({"signed_start_value": "yes"}, "signed_start_value", "expected boolean"),
    ({"ntp_server_1_ip_addr": "ntp example"}, "ntp_server_1_ip_addr", "host name"),
    ({"ntp_server_1_ip_addr": "10.0.0.256"}, "ntp_server_1_ip_addr", "host name"),
    ({"cable_id": 8}, "cable_id", "<= 7"),
    ({"cable_id": -1}, "cable_id", ">= 0"),
    ({"tariff_id": 5}, "tariff_id", "<= 4"),
    ({"temperature_warning_level_C": float("nan")}, "temperature_warning_level_C", "finite"),
    ({"temperature_error_level_C": float("inf")}, "temperature_error_level_C", "finite"),
    ({"temperature_hysteresis_K": float("inf")}, "temperature_hysteresis_K", "finite"),
    ({"meter_dst": ""}, "meter_dst", "not valid JSON"),
    ({"meter_timezone": "+15:00"}, "meter_timezone", "-11:00 to +14:00"),
    ({"meter_timezone": "-11:15"}, "meter_timezone", "-11:00 to +14:00"),
    ({"meter_timezone": "+01:20"}, "meter_timezone", "-11:00 to +14:00"),
    ({"meter_timezone": "UTC"}, "meter_timezone", "+HH:MM"),
    ({"meter_dst": "{not json"}, "meter_dst", "not valid JSON"),
    ({"meter_dst": "[1, 2]"}, "meter_dst", "JSON object"),
    ({"meter_tls_certificate": "hello"}, "meter_tls_certificate", "BEGIN CERTIFICATE"),
    (
        {"meter_tls_certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"},
        "meter_tls_certificate",
        "X.509",
    ),
    ({"colour": "red"}, "colour", "unknown key"),
]


@pytest.mark.parametrize(("override", "key", "fragment"), BAD)
def test_bad_config_names_the_key(override: dict[str, Any], key: str, fragment: str) -> None:
    values: dict[str, Any] = {"ip_address": "10.0.0.5"}
    values.update(override)
    if override == {}:
        values = {}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(values)
    assert caught.value.key == key
    assert fragment in caught.value.problem
    assert f"'{key}'" in str(caught.value)
    assert "\n" not in str(caught.value)


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_everest_config_file_picks_our_module(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "active_modules": {
                "evse_manager": {"module": "EvseManager", "config_module": {"connector_id": 1}},
                "powermeter_1": {
                    "module": "LemDCBM400600",
                    "config_module": {"ip_address": "192.168.10.20", "port": 8080},
                },
            }
        },
    )
    module_id, config = load_everest_config_file(path, None)
    assert module_id == "powermeter_1"
    assert (config.ip_address, config.port) == ("192.168.10.20", 8080)


def test_config_implementation_main_is_accepted(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "active_modules": {
                "meter": {
                    "module": "lem-dcbm",
                    "config_module": {"ip_address": "10.0.0.5"},
                    "config_implementation": {"main": {"tariff_id": 3}},
                }
            }
        },
    )
    assert load_everest_config_file(path, "meter")[1].tariff_id == 3


@pytest.mark.parametrize(
    ("document", "module_id", "key"),
    [
        ({"settings": {}}, None, "active_modules"),
        ({"active_modules": {"a": {"module": "EvseManager"}}}, None, "active_modules"),
        (
            {
                "active_modules": {
                    "a": {"module": "LemDCBM400600", "config_module": {"ip_address": "1.2.3.4"}},
                    "b": {"module": "LemDCBM400600", "config_module": {"ip_address": "1.2.3.5"}},
                }
            },
            None,
            "active_modules",
        ),
        ({"active_modules": {"a": {"module": "LemDCBM400600"}}}, "zzz", "--module-id"),
        ({"active_modules": {"a": {"module": "LemDCBM400600"}}}, None, "ip_address"),
        (
            {
                "active_modules": {
                    "a": {
                        "module": "LemDCBM400600",
                        "config_module": {"ip_address": "1.2.3.4", "x": 1},
                    }
                }
            },
            None,
            "x",
        ),
        (
            {
                "active_modules": {
                    "a": {
                        "module": "LemDCBM400600",
                        "config_module": {"ip_address": "1.2.3.4", "port": 80},
                        "config_implementation": {"main": {"port": 81}},
                    }
                }
            },
            None,
            "port",
        ),
    ],
)
def test_bad_config_files(tmp_path: Path, document: Any, module_id: str | None, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_everest_config_file(_write(tmp_path, document), module_id)
    assert caught.value.key == key


def test_plain_scalars_are_read_as_yaml_1_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "active_modules:\n"
        "  meter:\n"
        "    module: LemDCBM400600\n"
        "    config_module:\n"
        "      ip_address: 192.168.10.20\n"
        "      meter_timezone: +14:00\n"
        "      UV: no\n"
        "      UD: 2026-11-22\n"
        "      temperature_warning_level_C: 1e2\n"
        "      port: 0x50\n"
        "      signed_start_value: false\n"
    )
    config = load_everest_config_file(path, None)[1]
    assert config.meter_timezone == "+14:00"
    assert (config.UV, config.UD) == ("no", "2026-11-22")
    assert config.temperature_warning_level_C == 100.0
    assert config.port == 80
    assert config.signed_start_value is False


def test_unreadable_file_names_the_option_not_a_config_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_everest_config_file(tmp_path / "absent.yaml", None)

    assert caught.value.key == "--config"
    assert str(caught.value).startswith("option '--config': cannot read ")
    assert "config key" not in str(caught.value)


def test_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("active_modules:\n  a: [\n   b: c: d\n")

    with pytest.raises(ConfigError) as caught:
        load_everest_config_file(broken, None)

    message = str(caught.value)
    assert message == (
        f"config file '{broken}': not valid YAML at line 3, column 8: "
        "expected ',' or ']', but got ':'"
    )
    assert "<unicode string>" not in message


def test_unterminated_yaml_is_still_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("active_modules: [\n")

    with pytest.raises(ConfigError, match="not valid YAML at line 2, column 1") as caught:
        load_everest_config_file(broken, None)
    assert "\n" not in str(caught.value)


def _evse_and_meter(tmp_path: Path) -> Path:
    return _write(
        tmp_path,
        {
            "active_modules": {
                "evse": {"module": "EvseManager", "config_module": {"connector_id": 1}},
                "powermeter_1": {
                    "module": "LemDCBM400600Py",
                    "config_module": {"ip_address": "1.2.3.4"},
                },
                "powermeter_2": {
                    "module": "LemDCBM400600Py",
                    "config_module": {"ip_address": "1.2.3.5"},
                },
            }
        },
    )


def test_module_id_of_another_kind_of_module_says_so(tmp_path: Path) -> None:
    path = _evse_and_meter(tmp_path)

    with pytest.raises(ConfigError) as caught:
        load_everest_config_file(path, "evse")

    assert caught.value.key == "--module-id"
    assert str(caught.value) == (
        f"option '--module-id': 'evse' in {path} is a module of kind 'EvseManager', "
        "not lem-dcbm; this module's ids there: powermeter_1, powermeter_2"
    )


def test_unknown_module_id_lists_this_modules_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="this module's ids there: powermeter_1, powermeter_2"):
        load_everest_config_file(_evse_and_meter(tmp_path), "powermeter_3")


def test_a_folder_of_another_name_with_our_config_still_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"active_modules": {"m": {"module": "MyMeter", "config_module": {"ip_address": "::1"}}}},
    )

    assert load_everest_config_file(path, "m")[1].ip_address == "::1"


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("--broker-port", "option"),
        ("EV_MQTT_BROKER_PORT", "environment variable"),
        ("LEM_DCBM_LOG_LEVEL", "environment variable"),
        ("IT", "config key"),
        ("ip_address", "config key"),
    ],
)
def test_config_errors_say_what_the_key_is(key: str, kind: str) -> None:
    assert str(ConfigError(key, "bad")) == f"{kind} '{key}': bad"


def test_manager_parameters_in_transcript_shape() -> None:
    params = [
        {
            "characteristics": {"datatype": "string", "mutability": "ReadOnly"},
            "name": "ip_address",
            "value": "10.1.1.1",
        },
        {
            "characteristics": {"datatype": "integer", "mutability": "ReadOnly"},
            "name": "port",
            "value": 8000,
        },
        {
            "characteristics": {"datatype": "number", "mutability": "ReadOnly"},
            "name": "temperature_hysteresis_K",
            "value": 2,
        },
        {
            "characteristics": {"datatype": "integer", "mutability": "ReadOnly"},
            "name": "cable_id",
            "value": "3",
        },
        {
            "characteristics": {"datatype": "boolean", "mutability": "ReadOnly"},
            "name": "signed_start_value",
            "value": False,
        },
    ]
    config = config_from_manager_parameters(params)
    assert (config.ip_address, config.port, config.cable_id) == ("10.1.1.1", 8000, 3)
    assert config.temperature_hysteresis_K == 2.0
    assert config.signed_start_value is False


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ([{"value": 1}], "configuration_parameters"),
        ([{"name": "ip_address"}], "ip_address"),
        (
            [
                {"name": "ip_address", "value": "1.2.3.4"},
                {"name": "port", "value": "x", "characteristics": {"datatype": "integer"}},
            ],
            "port",
        ),
        ([{"name": "port", "value": 80, "characteristics": {"datatype": "integer"}}], "ip_address"),
    ],
)
def test_bad_manager_parameters(params: list[dict[str, Any]], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_manager_parameters(params)
    assert caught.value.key == key


def test_broker_settings_from_env_and_flags() -> None:
    assert broker_settings(env={}) == BrokerSettings(host="localhost", port=1883, prefix="everest/")
    env = {
        "EV_MQTT_BROKER_HOST": "broker",
        "EV_MQTT_BROKER_PORT": "1884",
        "EV_MQTT_EVEREST_PREFIX": "ev",
    }
    assert broker_settings(env=env) == BrokerSettings(host="broker", port=1884, prefix="ev/")
    sock = {"EV_MQTT_BROKER_SOCKET_PATH": "/run/mosquitto.sock"}
    assert broker_settings(env=sock).socket_path == "/run/mosquitto.sock"
    assert broker_settings(env=sock).describe() == "unix:/run/mosquitto.sock"
    flagged = broker_settings(host="h", port=2000, prefix="p/", env={**env, **sock})
    assert flagged == BrokerSettings(host="h", port=2000, prefix="p/")
    assert broker_settings(socket_path="/s", env=env).socket_path == "/s"


@pytest.mark.parametrize(
    ("kwargs", "env", "key"),
    [
        ({}, {"EV_MQTT_BROKER_PORT": "mqtt"}, "EV_MQTT_BROKER_PORT"),
        ({}, {"EV_MQTT_BROKER_PORT": "0"}, "EV_MQTT_BROKER_PORT"),
        ({"port": 70000}, {}, "--broker-port"),
    ],
)
def test_bad_broker_port(kwargs: dict[str, Any], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        broker_settings(env=env, **kwargs)
    assert caught.value.key == key
