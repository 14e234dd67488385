"""Broker credentials and TLS files: where they come from, what is refused, what never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from lem_dcbm.cli import build_parser, main
from lem_dcbm.config import BrokerCredentials, BrokerSettings, broker_settings
from lem_dcbm.errors import ConfigError
from tests.support.broker_certs import CertificateAuthority

SECRET = "s3cret-Pa55"


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path, "site")


def test_password_from_a_file_wins_over_the_variable(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    env = {"EV_MQTT_USERNAME": "dcbm", "EV_MQTT_PASSWORD": "other"}
    assert broker_settings(env=env).password == "other"
    from_env_file = broker_settings(env={**env, "EV_MQTT_PASSWORD_FILE": str(secret)})
    assert (from_env_file.username, from_env_file.password) == ("dcbm", SECRET)
    flagged = BrokerCredentials(username="flag-user", password_file=str(secret))
    from_flag = broker_settings(credentials=flagged, env=env)
    assert (from_flag.username, from_flag.password) == ("flag-user", SECRET)


def test_the_password_never_shows_in_repr_or_description() -> None:
    settings = BrokerSettings(username="dcbm", password=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in settings.describe() + settings.describe_user()
    assert settings.describe_user() == "user 'dcbm'"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"EV_MQTT_PASSWORD": SECRET}, "EV_MQTT_PASSWORD"),
        (
            {"EV_MQTT_USERNAME": "u", "EV_MQTT_PASSWORD_FILE": "/nonexistent"},
            "EV_MQTT_PASSWORD_FILE",
        ),
        ({"EV_MQTT_TLS_CA_FILE": "/nonexistent/ca.crt"}, "EV_MQTT_TLS_CA_FILE"),
        ({"EV_MQTT_TLS_CERT_FILE": "/c.crt"}, "EV_MQTT_TLS_CA_FILE"),
    ],
)
def test_unusable_security_settings_name_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        broker_settings(env=env)
    assert caught.value.key == key
    assert SECRET not in str(caught.value)


def test_empty_or_huge_password_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    huge = tmp_path / "huge"
    huge.write_text("x" * 5000)
    for path in (empty, huge):
        env = {"EV_MQTT_USERNAME": "u", "EV_MQTT_PASSWORD_FILE": str(path)}
        with pytest.raises(ConfigError, match=str(path)):
            broker_settings(env=env)


def test_tls_files_are_checked_at_start(tmp_path: Path, authority: CertificateAuthority) -> None:
    client = authority.issue("module", server=False)
    env = {
        "EV_MQTT_TLS_CA_FILE": str(authority.ca_file),
        "EV_MQTT_TLS_CERT_FILE": str(client.cert_file),
        "EV_MQTT_TLS_KEY_FILE": str(client.key_file),
    }
    settings = broker_settings(env=env)
    assert settings.tls_key_file == str(client.key_file)
    assert settings.describe() == "localhost:1883 (TLS)"
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as caught:
        broker_settings(env={**env, "EV_MQTT_TLS_KEY_FILE": str(garbage)})
    assert caught.value.key == "EV_MQTT_TLS_CERT_FILE"
    assert "not a key" not in str(caught.value)
    with pytest.raises(ConfigError, match="a key needs its certificate"):
        broker_settings(env={**env, "EV_MQTT_TLS_CERT_FILE": ""})
    with pytest.raises(ConfigError, match="not a unix socket"):
        broker_settings(socket_path="/run/mosquitto.sock", env=env)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--config", "c.yaml"],
        ["watch"],
        ["call", "stop_transaction"],
        ["records", "resend", "tx-1"],
    ],
)
def test_a_password_on_the_command_line_is_refused(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([*command, "--broker-password", SECRET])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--broker-password is refused" in err
    assert SECRET not in err


def test_run_exits_2_on_an_unusable_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).resolve().parents[2] / "config" / "simulator.yaml"
    missing = tmp_path / "missing-ca.crt"
    assert main(["run", "--config", str(config), "--broker-tls-ca", str(missing)]) == 2
    err = capsys.readouterr().err
    # The option given is named, not the variable it stands in for.
    assert f"option '--broker-tls-ca': cannot use {missing}" in err
    assert "EV_MQTT_TLS_CA_FILE" not in err


def test_an_unusable_ca_file_from_the_environment_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Path(__file__).resolve().parents[2] / "config" / "simulator.yaml"
    missing = tmp_path / "missing-ca.crt"
    monkeypatch.setenv("EV_MQTT_TLS_CA_FILE", str(missing))
    assert main(["run", "--config", str(config), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"environment variable 'EV_MQTT_TLS_CA_FILE': cannot use {missing}" in err
