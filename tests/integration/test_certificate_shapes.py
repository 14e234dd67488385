"""Every malformed ``meter_tls_certificate``: exit 2 with one line naming the key, never a trace."""

from __future__ import annotations

import base64
import ssl
import sys
from pathlib import Path

import pytest

from lem_dcbm.errors import ConfigError
from lem_dcbm.harness import run_to_exit, write_config
from lem_dcbm.meter.tls import normalize_pem
from tests.support.certs import BEGIN, END, CertPair, look_alike, make_self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def meter_cert() -> CertPair:
    return make_self_signed("DCBM 12024072805", key_bits=1024)


def _der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def _block(der: bytes) -> str:
    return f"{BEGIN}\n{base64.b64encode(der).decode()}\n{END}\n"


def shapes(cert: CertPair) -> dict[str, tuple[str, str]]:
    """Name -> (certificate text, what the line must say)."""
    der = _der(cert.cert_pem)
    other = _der(look_alike(cert.cert_pem).cert_pem)
    return {
        "header and footer only": (f"{BEGIN}\n{END}\n", "empty"),
        "header and footer on one line": (BEGIN + END, "empty"),
        "only whitespace inside": (f"{BEGIN}\n  \n\t\n{END}", "empty"),
        "escaped newlines only": (BEGIN + "\\n\\n" + END, "empty"),
        "one base64 quantum": (f"{BEGIN}\nAAAA\n{END}", "not a parsable X.509"),
        "padding only": (f"{BEGIN}\n====\n{END}", "not base64"),
        "truncated": (_block(der[: len(der) // 2]), "not a parsable X.509"),
        "two certificates in one block": (_block(der + other), "the block holds 2"),
        "a private key": (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "no '-----BEGIN CERTIFICATE-----'",
        ),
        "footer before header": (f"{END}\n{BEGIN}", "no '-----BEGIN CERTIFICATE-----'"),
        "non-ASCII body": (f"{BEGIN}\n\u0663\u0663\u0663\u0663\n{END}", "not base64"),
    }


CASES = [
    "header and footer only",
    "header and footer on one line",
    "only whitespace inside",
    "escaped newlines only",
    "one base64 quantum",
    "padding only",
    "truncated",
    "two certificates in one block",
    "a private key",
    "footer before header",
    "non-ASCII body",
]


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_certificate_is_a_config_error(meter_cert: CertPair, case: str) -> None:
    assert sorted(shapes(meter_cert)) == sorted(CASES)
    text, problem = shapes(meter_cert)[case]
    with pytest.raises(ConfigError) as caught:
        normalize_pem(text)
    assert caught.value.key == "meter_tls_certificate"
    assert problem in str(caught.value)


@pytest.mark.parametrize("case", ["header and footer only", "two certificates in one block"])
def test_the_module_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, meter_cert: CertPair, case: str
) -> None:
    text, problem = shapes(meter_cert)[case]
    values = {"ip_address": "127.0.0.1", "port": 443, "meter_tls_certificate": text}
    config = write_config(tmp_path / "config.yaml", values)
    argv = [sys.executable, "-m", "lem_dcbm", "run", "--config", str(config)]
    code, stderr = run_to_exit([*argv, "--broker-host", "127.0.0.1", "--broker-port", "1"])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert "meter_tls_certificate" in lines[0]
    assert problem in lines[0]
