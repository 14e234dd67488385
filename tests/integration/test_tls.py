"""Pinned TLS: PEM repair, context settings, and real handshakes against a local server."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lem_dcbm.errors import ConfigError, MeterTlsError
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.meter.tls import normalize_pem, pinned_ssl_context
from lem_dcbm.meter.transport import HttpTransport
from tests.support.certs import BEGIN, END, CertPair, line_breakless, look_alike, make_self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def meter_cert() -> CertPair:
    return make_self_signed("DCBM 12024072805", key_bits=1024)


@pytest.fixture(scope="module")
def impostor_cert(meter_cert: CertPair) -> CertPair:
    return look_alike(meter_cert.cert_pem)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed handshakes are the point of some tests


@contextmanager
def tls_server(pair: CertPair, tmp_path: Path) -> Iterator[int]:
    """An HTTPS server like the meter's (1024-bit key, security level 1); yields its port."""
    cert_path, key_path = pair.write(tmp_path, "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=1")
    context.load_cert_chain(cert_path, key_path)
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- normalize_pem ---------------------------------------------------------------------


def test_line_breakless_pem_is_repaired(meter_cert: CertPair) -> None:
    served = line_breakless(meter_cert.cert_pem)
    assert "\n" not in served

    repaired = normalize_pem(served)

    assert repaired == meter_cert.cert_pem
    assert repaired.startswith(BEGIN + "\n")
    assert repaired.endswith(END + "\n")
    assert all(len(line) <= 64 for line in repaired.splitlines())


def test_normal_pem_and_surrounding_whitespace_are_accepted(meter_cert: CertPair) -> None:
    assert normalize_pem(meter_cert.cert_pem) == meter_cert.cert_pem
    assert normalize_pem("\n  " + meter_cert.cert_pem + "  \n\n") == meter_cert.cert_pem
    crlf = meter_cert.cert_pem.replace("\n", "\r\n")
    assert normalize_pem(crlf) == meter_cert.cert_pem


def test_pem_with_json_escapes_left_in_is_repaired(meter_cert: CertPair) -> None:
    escaped = meter_cert.cert_pem.replace("\n", "\\n")
    assert normalize_pem(escaped) == meter_cert.cert_pem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no '-----BEGIN CERTIFICATE-----'"),
        ("hello", "no '-----BEGIN CERTIFICATE-----'"),
        (BEGIN + "not base64 at all!" + END, "not base64"),
        (BEGIN + base64.b64encode(b"x" * 300).decode() + END, "not a parsable X.509"),
    ],
)
def test_garbage_pem_is_a_config_error(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_pem(text)
    assert caught.value.key == "meter_tls_certificate"
    assert problem in str(caught.value)
    assert "meter_tls_certificate" in str(caught.value)


def test_a_bundle_of_two_certificates_is_refused(
    meter_cert: CertPair, impostor_cert: CertPair
) -> None:
    with pytest.raises(ConfigError, match="expected one certificate, found 2"):
        normalize_pem(meter_cert.cert_pem + impostor_cert.cert_pem)


# -- pinned_ssl_context ------------------------------------------------------------------


def test_pinned_context_settings(meter_cert: CertPair) -> None:
    context = pinned_ssl_context(line_breakless(meter_cert.cert_pem))

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert not context.verify_flags & ssl.VERIFY_X509_STRICT
    # Exactly the pinned certificate is trusted: no system or certifi CAs.
    assert context.cert_store_stats()["x509"] == 1


def test_pinned_context_rejects_an_unparsable_pem() -> None:
    with pytest.raises(ConfigError, match="meter_tls_certificate"):
        pinned_ssl_context(BEGIN + "AAAA" + END)


def test_client_construction_validates_the_pem_up_front() -> None:
    with pytest.raises(ConfigError) as caught:
        MeterClient.connect("127.0.0.1", 1, tls_certificate_pem="-----BEGIN CERTIFICATE-----xx")
    assert caught.value.key == "meter_tls_certificate"


# -- real handshakes ---------------------------------------------------------------------


def test_pinned_transport_talks_to_the_meter_by_ip_despite_1024_bit_key(
    meter_cert: CertPair, tmp_path: Path
) -> None:
    with tls_server(meter_cert, tmp_path) as port:
        transport = HttpTransport(
            f"https://127.0.0.1:{port}",
            timeout_s=5,
            tls_certificate_pem=line_breakless(meter_cert.cert_pem),
        )
        try:
            status, text = transport.request("GET", "/v1/status")
            # A second request reuses the pool and must not widen the trust either.
            transport.request("GET", "/v1/status")
        finally:
            transport.close()

    assert (status, json.loads(text)) == (200, {"path": "/v1/status"})
    context = transport.ssl_context
    assert context is not None
    # requests would have loaded its CA bundle into the context if we let it.
    assert context.cert_store_stats()["x509"] == 1


def test_look_alike_certificate_fails_with_a_tls_error(
    meter_cert: CertPair, impostor_cert: CertPair, tmp_path: Path
) -> None:
    with tls_server(impostor_cert, tmp_path) as port:
        transport = HttpTransport(
            f"https://127.0.0.1:{port}", timeout_s=5, tls_certificate_pem=meter_cert.cert_pem
        )
        with pytest.raises(MeterTlsError) as caught:
            transport.request("GET", "/v1/status")
        transport.close()

    message = str(caught.value)
    assert message.startswith(f"GET https://127.0.0.1:{port}/v1/status: TLS handshake failed")
    assert "certificate verify failed" in message


def test_default_security_refuses_the_1024_bit_key(meter_cert: CertPair, tmp_path: Path) -> None:
    cert_path, _ = meter_cert.write(tmp_path, "trusted")
    strict = ssl.create_default_context(cafile=str(cert_path))
    strict.check_hostname = False
    with (
        tls_server(meter_cert, tmp_path) as port,
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLError) as caught,
    ):
        strict.wrap_socket(raw, server_hostname="127.0.0.1")
    assert "too small" in str(caught.value) or "too weak" in str(caught.value)


def test_interface_binding_options() -> None:
    import socket as _socket

    from lem_dcbm.errors import ConfigError
    from lem_dcbm.meter.transport import interface_socket_options

    assert (_socket.SOL_SOCKET, _socket.SO_BINDTODEVICE, b"lo") in interface_socket_options("lo")
    assert all(opt[1] != _socket.SO_BINDTODEVICE for opt in interface_socket_options(""))
    with pytest.raises(ConfigError, match="interface"):
        interface_socket_options("nosuchif0")
