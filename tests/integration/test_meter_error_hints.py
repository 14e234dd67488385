"""Meter errors name the full URL and say when the scheme or the certificate is mixed up.

Against the in-process simulator over real sockets and real TLS: the mix-ups an
integrator makes at commissioning (TLS switched on in the meter but not in the config,
or the other way round, a replaced meter with a new certificate) must be told apart
from an unreachable meter.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.errors import MeterConnectionError, MeterTlsError
from lem_dcbm.harness import Simulator, free_port
from lem_dcbm.meter.client import MeterClient
from tests.support.certs import look_alike
from tests.support.simulator_inprocess import InProcessSimulator, meter_server, start_in_process

__all__ = ["meter_server"]  # the fixture, imported to be used here


@pytest.fixture
def tls_meter(tmp_path: Path) -> Iterator[InProcessSimulator]:
    """An in-process meter with TLS on."""
    sim = start_in_process(tmp_path / "tls-meter", tls=True)
    try:
        yield sim
    finally:
        sim.stop()


def _status_error(client: MeterClient) -> MeterConnectionError:
    try:
        with pytest.raises(MeterConnectionError) as caught:
            client.status()
    finally:
        client.close()
    return caught.value


def _fingerprint(pem: str | bytes) -> str:
    text = pem.decode() if isinstance(pem, bytes) else pem
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(text)).digest()
    return ":".join(f"{byte:02X}" for byte in digest)


def test_refused_connection_names_the_url() -> None:
    port = free_port()
    message = str(_status_error(MeterClient.connect("127.0.0.1", port, timeout_s=2.0)))
    assert message.startswith(f"GET http://127.0.0.1:{port}/v1/status: connection failed")
    assert "ConnectionRefusedError" in message
    assert "HTTPS" not in message  # nothing listens: no scheme to guess


def test_plain_http_against_a_tls_meter_says_it_speaks_https(
    tls_meter: InProcessSimulator,
) -> None:
    client = MeterClient.connect(tls_meter.host, tls_meter.port, timeout_s=2.0)
    message = str(_status_error(client))
    assert message.startswith(f"GET http://127.0.0.1:{tls_meter.port}/v1/status: ")
    assert "the meter seems to speak HTTPS on this port" in message
    assert "meter_tls_certificate" in message


def test_plain_http_against_a_tls_meter_logs_its_retries_once_not_per_poll(
    tls_meter: InProcessSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    # Each poll used to log an INFO and a WARNING line for its retry, for ever.
    caplog.set_level(logging.DEBUG, logger="lem_dcbm.retry")
    client = MeterClient.connect(tls_meter.host, tls_meter.port, timeout_s=2.0)
    try:
        for _ in range(4):
            with pytest.raises(MeterConnectionError):
                client.status()
        loud = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert len(loud) <= 2, [r.getMessage() for r in loud]
        assert len(caplog.records) > len(loud)  # the later ones are still there, at DEBUG
    finally:
        client.close()


def test_tls_against_a_plain_http_meter_says_it_answers_http(
    meter_server: InProcessSimulator,
) -> None:
    client = MeterClient.connect(
        meter_server.host, meter_server.port, tls_certificate_pem=meter_server.cert_pem
    )
    message = str(_status_error(client))
    assert message.startswith(f"GET https://127.0.0.1:{meter_server.port}/v1/status: ")
    assert "the meter answers plain HTTP on this port (its TLS is off)" in message


def test_wrong_pinned_certificate_shows_both_fingerprints(tls_meter: InProcessSimulator) -> None:
    impostor = look_alike(tls_meter.cert_pem)
    pinned = MeterClient.connect(
        tls_meter.host, tls_meter.port, tls_certificate_pem=impostor.cert_pem
    )
    error = _status_error(pinned)
    assert isinstance(error, MeterTlsError)
    message = str(error)
    assert message.startswith(f"GET https://127.0.0.1:{tls_meter.port}/v1/status: TLS handshake")
    assert "differs from the configured one" in message
    assert f"configured SHA-256 {_fingerprint(impostor.cert_pem)}" in message
    assert f"presented SHA-256 {_fingerprint(tls_meter.cert_pem)}" in message


def test_right_certificate_and_scheme_work_without_a_hint(tls_meter: InProcessSimulator) -> None:
    client = MeterClient.connect(
        tls_meter.host, tls_meter.port, tls_certificate_pem=tls_meter.cert_pem
    )
    try:
        assert client.status().meter_id
    finally:
        client.close()


def test_a_plain_meter_resetting_connections_gets_no_scheme_hint(simulator: Simulator) -> None:
    simulator.set_faults(reset_connection=True, paths=["/v1/status"])
    message = str(_status_error(MeterClient.connect(simulator.host, simulator.port)))
    assert message.startswith(f"GET {simulator.base_url}/v1/status: connection failed")
    assert "HTTPS" not in message
    assert "certificate" not in message
