"""The broker link behind a password and TLS: a real mosquitto, certificates made here.

Right credentials and CA work end to end; a wrong password or a broker certificate from
another CA gives one clear line while the module keeps retrying; nothing secret is logged.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.config import BrokerSettings
from lem_dcbm.everest.bus import BrokerRefused, MqttBus
from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    ModuleProcess,
    Simulator,
    run_to_exit,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from tests.integration.test_module import transaction_round_trip
from tests.support.broker_certs import CertificateAuthority, Issued
from tests.support.everest_peer import EverestPeer

pytestmark = pytest.mark.integration

USER = "dcbm"


@pytest.fixture
def password() -> str:
    return secrets.token_urlsafe(18)


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "pki", "site")


def secured(broker: Broker, password: str, client: Issued | None = None) -> BrokerSettings:
    """Settings a client of ``broker`` uses: the user, the password, the CA, a client cert."""
    return BrokerSettings(
        host=broker.host,
        port=broker.port,
        username=USER,
        password=password,
        tls_ca_file=str(broker.tls.ca_file) if broker.tls else None,
        tls_cert_file=str(client.cert_file) if client else None,
        tls_key_file=str(client.key_file) if client else None,
    )


def module_against(
    tmp_path: Path, sim: Simulator, broker: Broker, args: list[str], env: dict[str, str]
) -> ModuleProcess:
    config = write_config(tmp_path / "config.yaml", simulator_config(sim))
    return start_module(tmp_path, config, broker.port, extra_args=args, env=env)


def module_with_password(
    tmp_path: Path, sim: Simulator, broker: Broker, password: str
) -> ModuleProcess:
    """The module with its credentials in the environment, as in a container."""
    env = {"EV_MQTT_USERNAME": USER, "EV_MQTT_PASSWORD": password}
    return module_against(tmp_path / "module", sim, broker, [], env)


def restart_with_password(broker: Broker, password: str) -> None:
    """The broker's password for ``USER`` changes (a restart, on the same port)."""
    broker.stop()
    broker.users = {USER: password}
    broker.start()


def error_lines(log: str, needle: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line and needle in line]


def one_line_then_retries(module: ModuleProcess, refusal: str) -> str:
    """The module says ``refusal`` once at ERROR, tries again (debug only), and stays up."""
    wait_until(lambda: error_lines(module.log(), refusal), 20, what="the refusal")
    seen = module.log().count(refusal)
    wait_until(lambda: module.log().count(refusal) > seen, 20, what="another attempt")
    assert module.process.poll() is None, module.log()
    assert len(error_lines(module.log(), "")) == 1, module.log()
    line = error_lines(module.log(), refusal)[0]
    assert line.endswith("; retrying with backoff up to 60 s")
    return line


def pem_bodies(*paths: Path) -> list[str]:
    """Every base64 line of the PEM files: none may show up in a log."""
    return [
        line
        for path in paths
        for line in path.read_text().splitlines()
        if line and not line.startswith("-----")
    ]


@pytest.fixture
def mutual_tls_broker(
    tmp_path: Path, authority: CertificateAuthority, password: str
) -> Iterator[Broker]:
    """Password, TLS, and a client certificate required."""
    tls = authority.broker_tls(require_certificate=True)
    with Broker(tmp_path / "broker", users={USER: password}, tls=tls) as broker:
        yield broker


def test_password_tls_and_client_certificate_end_to_end_with_a_clean_log(
    tmp_path: Path,
    simulator: Simulator,
    mutual_tls_broker: Broker,
    authority: CertificateAuthority,
    password: str,
) -> None:
    client = authority.issue("module", server=False)
    password_file = tmp_path / "broker-password"
    password_file.write_text(password + "\n")
    args = [
        *("--broker-username", USER, "--broker-password-file", str(password_file)),
        *("--broker-tls-ca", str(authority.ca_file)),
        *("--broker-tls-cert", str(client.cert_file), "--broker-tls-key", str(client.key_file)),
    ]
    peer_client = authority.issue("peer", server=False)
    module = module_against(tmp_path / "module", simulator, mutual_tls_broker, args, {})
    try:
        with EverestPeer(
            mutual_tls_broker.host,
            mutual_tls_broker.port,
            broker=secured(mutual_tls_broker, password, peer_client),
        ) as peer:
            transaction_round_trip(peer, simulator)
    finally:
        assert module.terminate() == 0, module.log()
    log = module.log()
    assert re.search(r"DEBUG .*lem_dcbm\.everest\.bus\.paho: Sending CONNECT", log), "not DEBUG"
    assert f"connected to the MQTT broker at 127.0.0.1:{mutual_tls_broker.port} (TLS)" in log
    assert password not in log
    assert "PRIVATE KEY" not in log
    assert "BEGIN CERTIFICATE" not in log
    tls = mutual_tls_broker.tls
    assert tls is not None
    for line in pem_bodies(client.key_file, client.cert_file, tls.key_file, tls.ca_file):
        assert line not in log


def test_password_from_the_environment(tmp_path: Path, simulator: Simulator, password: str) -> None:
    with Broker(tmp_path / "broker", users={USER: password}) as broker:
        module = module_with_password(tmp_path, simulator, broker, password)
        try:
            with EverestPeer(broker.host, broker.port, broker=secured(broker, password)) as peer:
                peer.wait_for_var("powermeter", 1, timeout=20)
                answer = peer.call("stop_transaction", {"transaction_id": "never-started"})
                assert answer["retval"]["status"] != "OK"
        finally:
            assert module.terminate() == 0, module.log()
        assert password not in module.log()


def test_wrong_password_is_one_clear_line_and_retries_until_fixed(
    tmp_path: Path, simulator: Simulator, password: str
) -> None:
    wrong = secrets.token_urlsafe(18)
    with Broker(tmp_path / "broker", users={USER: password}) as broker:
        module = module_with_password(tmp_path, simulator, broker, wrong)
        try:
            refusal = f"the MQTT broker at 127.0.0.1:{broker.port} refused user 'dcbm'"
            one_line_then_retries(module, refusal)
            # The broker is fixed: the module gets in without a restart.
            restart_with_password(broker, wrong)
            with EverestPeer(broker.host, broker.port, broker=secured(broker, wrong)) as peer:
                peer.wait_for_var("powermeter", 1, timeout=30)
        finally:
            assert module.terminate() == 0, module.log()
        log = module.log()
        assert password not in log
        assert wrong not in log


def test_broker_certificate_from_another_ca_is_refused(
    tmp_path: Path, simulator: Simulator, authority: CertificateAuthority
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-pki", "stranger")
    with Broker(tmp_path / "broker", tls=stranger.broker_tls()) as broker:
        args = ["--broker-tls-ca", str(authority.ca_file)]
        module = module_against(tmp_path / "module", simulator, broker, args, {})
        try:
            refusal = f"presented a certificate refused against the CA file {authority.ca_file}"
            line = one_line_then_retries(module, refusal)
            assert f"127.0.0.1:{broker.port} (TLS)" in line
        finally:
            assert module.terminate() == 0, module.log()


def test_broker_certificate_for_another_host_is_refused(
    tmp_path: Path, authority: CertificateAuthority
) -> None:
    tls = authority.broker_tls(hosts=("broker.elsewhere.example",))
    with Broker(tmp_path / "broker", tls=tls) as broker:
        bus = MqttBus(broker.settings, "wrong-host", clean_session=True)
        with pytest.raises(BrokerRefused, match="mismatch, certificate is not valid for"):
            bus.connect(timeout_s=5.0)


def test_client_certificate_is_required_when_the_broker_asks_for_one(
    tmp_path: Path,
    mutual_tls_broker: Broker,
    authority: CertificateAuthority,
    password: str,
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-pki", "stranger")
    expected = {None: "certificate required", "stranger": "unknown ca"}
    for name, problem in expected.items():
        client = stranger.issue("module", server=False) if name else None
        bus = MqttBus(secured(mutual_tls_broker, password, client), "no-cert", clean_session=True)
        with pytest.raises(BrokerRefused, match=problem):
            bus.connect(timeout_s=5.0)
    good = MqttBus(
        secured(mutual_tls_broker, password, authority.issue("module", server=False)),
        "with-cert",
        clean_session=True,
    )
    good.connect(timeout_s=10)
    good.close()


def test_a_password_changed_while_running_is_one_line_and_a_reconnect(
    tmp_path: Path, simulator: Simulator, password: str
) -> None:
    renewed = secrets.token_urlsafe(18)
    with Broker(tmp_path / "broker", users={USER: password}) as broker:
        module = module_with_password(tmp_path, simulator, broker, password)
        try:
            module.wait_ready()
            restart_with_password(broker, renewed)
            refusal = f"the MQTT broker at 127.0.0.1:{broker.port} refused user 'dcbm'"
            # The module has more than one connection (presence, its own): wait for the
            # refusal at ERROR, then for a later attempt, and count the ERROR lines then.
            wait_until(lambda: error_lines(module.log(), refusal), 20, what="the refusal")
            seen = module.log().count(refusal)
            wait_until(lambda: module.log().count(refusal) > seen, 20, what="another attempt")
            assert len(error_lines(module.log(), refusal)) == 1, module.log()
            assert module.process.poll() is None, module.log()
            restart_with_password(broker, password)
            with EverestPeer(broker.host, broker.port, broker=secured(broker, password)) as peer:
                peer.wait_for_var("powermeter", 1, timeout=20)
        finally:
            assert module.terminate() == 0, module.log()
        assert renewed not in module.log()


def test_call_tool_with_credentials(
    tmp_path: Path, simulator: Simulator, authority: CertificateAuthority, password: str
) -> None:
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(password)
    wrong.write_text("not-" + password)
    with Broker(tmp_path / "broker", users={USER: password}, tls=authority.broker_tls()) as broker:
        args = [
            *("--broker-username", USER, "--broker-password-file", str(right)),
            *("--broker-tls-ca", str(authority.ca_file)),
        ]
        module = module_against(tmp_path / "module", simulator, broker, args, {})
        try:
            module.wait_ready()
            call = [sys.executable, "-m", "lem_dcbm", "call", "stop_transaction"]
            call += ["--module-id", MODULE_ID, "--transaction-id", "none"]
            call += ["--broker-host", broker.host, "--broker-port", str(broker.port)]
            call += ["--broker-username", USER, "--broker-tls-ca", str(authority.ca_file)]
            answered = run_to_exit([*call, "--broker-password-file", str(right)])
            assert answered[0] == 1, answered[1]  # answered: no transaction to stop
            refused = run_to_exit([*call, "--broker-password-file", str(wrong)])
            assert refused[0] == 3, refused[1]
            assert "refused user 'dcbm'" in refused[1]
            assert password not in refused[1]
        finally:
            assert module.terminate() == 0, module.log()
