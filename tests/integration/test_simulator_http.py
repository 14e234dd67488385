"""The simulator's HTTP against what real clients send: curl, raw sockets, the module's client.

libcurl, as EVerest's C++ driver uses it, sends PUT and POST bodies of unknown size
chunked and with ``Expect: 100-continue``; other clients pipeline requests on one
keep-alive connection. A real meter accepts all of these, so the simulator must too.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lem_dcbm.errors import MeterConnectionError
from lem_dcbm.harness import wait_until
from lem_dcbm.meter.client import MeterClient
from tests.support.curl import NO_ANSWER, needs_curl, run_curl
from tests.support.simulator_inprocess import InProcessSimulator, meter_server

pytestmark = pytest.mark.integration

__all__ = ["meter_server"]

#: The start body exactly as EVerest's C++ driver sends it (its controller unit test).
CPP_START = (
    '{"evseId":"mock_evse_id","transactionId":"mock_transaction_id",'
    '"clientId":",mock_transaction_id","tariffId":0,"cableId":0,"userData":""}'
)


def curl(
    sim: InProcessSimulator,
    method: str,
    path: str,
    body: str | None = None,
    *,
    https: bool | None = None,
    pin: Path | None = None,
) -> tuple[int, str, str]:
    """curl once, over the scheme the meter serves unless told: (status, body, ``-v`` log)."""
    tls = sim.device.tls_active if https is None else https
    result = run_curl(
        sim.host, sim.port, method, path, body, https=tls, pin=pin or sim.public_key_path
    )
    return result.status, result.body, result.log


def raw_exchange(sim: InProcessSimulator, data: bytes, answers: int) -> list[tuple[int, str]]:
    """Send ``data`` at once on one plain connection; read ``answers`` responses in order."""
    with socket.create_connection((sim.host, sim.port), timeout=5) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        return [read_response(reader) for _ in range(answers)]


def read_response(reader: Any) -> tuple[int, str]:
    """One HTTP/1.1 response (Content-Length framed) from a buffered socket reader."""
    status_line = reader.readline().decode()
    assert status_line.startswith("HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := reader.readline().decode().strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), body.decode()


def chunked(body: str, sizes: Sequence[int]) -> bytes:
    """``body`` in chunks of ``sizes`` and a last one for the rest; extension and trailer too."""
    data, out, at = body.encode(), b"", 0
    for size in [*sizes, len(body.encode())]:
        piece = data[at : at + size]
        at += len(piece)
        if piece:
            out += f"{len(piece):x};note=x\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: ignored\r\n\r\n"


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A raw HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: meter", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- curl: chunked bodies and Expect: 100-continue ------------------------------------


@needs_curl
def test_curl_chunked_put_is_accepted(meter_server: InProcessSimulator) -> None:
    status, body, log = curl(meter_server, "PUT", "/v1/settings", '{"time": {"tz": "+01:00"}}')
    assert "Transfer-Encoding: chunked" in log
    assert "Expect: 100-continue" in log
    assert "HTTP/1.1 100 Continue" in log
    assert status == 200, body
    assert json.loads(body) == {"meterId": "12024072805", "result": 1}
    assert meter_server.device.settings()["time"]["tz"] == "+01:00"


@needs_curl
def test_curl_chunked_start_and_stop_like_libcurl(meter_server: InProcessSimulator) -> None:
    status, body, log = curl(meter_server, "POST", "/v1/legal", CPP_START)
    assert "Transfer-Encoding: chunked" in log
    assert status == 201, body
    assert json.loads(body)["running"] is True
    stop = "/v1/legal?transactionId=mock_transaction_id"
    status, body, _ = curl(meter_server, "PUT", stop, '{"running": false}')
    assert status == 200, body
    assert json.loads(body)["transactionId"] == "mock_transaction_id"
    status, record, _ = curl(meter_server, "GET", "/v1/ocmf?transactionId=mock_transaction_id")
    assert status == 200
    assert record.startswith("OCMF|")


@needs_curl
def test_curl_chunked_body_that_is_not_json_is_refused(meter_server: InProcessSimulator) -> None:
    status, body, _ = curl(meter_server, "PUT", "/v1/settings", "{not json")
    assert status == 400
    assert json.loads(body)["field"] == "body"


# -- raw sockets: chunk framing, 100-continue, pipelining ------------------------------


def test_chunked_body_in_pieces_with_extension_and_trailer(
    meter_server: InProcessSimulator,
) -> None:
    body = '{"ocmfId": {"IT": 5}}'
    put = request("PUT", "/v1/settings", {"Transfer-Encoding": "chunked"}, chunked(body, [1, 7]))
    answers = raw_exchange(meter_server, put + request("GET", "/v1/settings", {}), 2)
    assert answers[0] == (200, json.dumps({"meterId": "12024072805", "result": 1}))
    assert answers[1][0] == 200
    assert json.loads(answers[1][1])["ocmfId"] == {"IT": 5}


def test_expect_100_continue_is_answered_before_the_body(
    meter_server: InProcessSimulator,
) -> None:
    body = b'{"time": {"tz": "+02:00"}}'
    head = request(
        "PUT", "/v1/settings", {"Content-Length": str(len(body)), "Expect": "100-continue"}
    )
    with socket.create_connection((meter_server.host, meter_server.port), timeout=5) as sock:
        sock.sendall(head)
        reader = sock.makefile("rb")
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert reader.readline() == b"\r\n"
        sock.sendall(body)
        assert read_response(reader)[0] == 200
    assert meter_server.device.settings()["time"]["tz"] == "+02:00"


def test_pipelined_requests_are_answered_in_order(meter_server: InProcessSimulator) -> None:
    put_body = b'{"time": {"tz": "-03:00"}}'
    start = CPP_START.encode()
    pipeline = b"".join(
        [
            request("GET", "/v1/status", {}),
            request("PUT", "/v1/settings", {"Content-Length": str(len(put_body))}, put_body),
            request("POST", "/v1/legal", {"Transfer-Encoding": "chunked"}, chunked(CPP_START, [9])),
            request("GET", "/v1/settings", {}),
            request("POST", "/v1/legal", {"Content-Length": str(len(start))}, start),
            request("GET", "/v1/status", {"Connection": "close"}),
        ]
    )
    answers = raw_exchange(meter_server, pipeline, 6)
    assert [status for status, _ in answers] == [200, 200, 201, 200, 409, 200]
    assert json.loads(answers[0][1])["status"]["value"] == 17
    assert json.loads(answers[3][1])["time"]["tz"] == "-03:00"
    assert json.loads(answers[4][1])["condition"] == "transactionIsOnGoing"
    assert json.loads(answers[5][1])["status"]["value"] == 21
    assert meter_server.server.connections.stats()["accepted"] == 1


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Transfer-Encoding": "chunked"}, b"zz\r\n{}\r\n0\r\n\r\n", 400),
        ({"Transfer-Encoding": "chunked"}, b"2\r\n{}}\r\n0\r\n\r\n", 400),
        ({"Transfer-Encoding": "chunked"}, b"0x2\r\n{}\r\n0\r\n\r\n", 400),
        ({"Transfer-Encoding": "chunked", "Content-Length": "2"}, b"2\r\n{}\r\n0\r\n\r\n", 400),
        ({"Transfer-Encoding": "gzip"}, b"", 501),
        ({"Transfer-Encoding": "chunked"}, b"10001\r\n", 413),
        ({"Content-Length": "70000"}, b"", 413),
        ({"Content-Length": "two"}, b"{}", 400),
    ],
)
def test_a_malformed_body_is_refused_and_the_connection_closed(
    meter_server: InProcessSimulator, headers: dict[str, str], body: bytes, status: int
) -> None:
    data = request("PUT", "/v1/settings", headers, body) + request("GET", "/v1/status", {})
    with socket.create_connection((meter_server.host, meter_server.port), timeout=5) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        answer = read_response(reader)
        assert answer[0] == status
        assert json.loads(answer[1])["field"] == "body"
        # The stream's framing is lost: nothing after the bad body is answered.
        assert reader.read() == b""
    assert meter_server.device.state()["settings_writes"] == []


# -- the TLS switch at run time -------------------------------------------------------


def test_tls_switch_with_the_module_client(meter_server: InProcessSimulator) -> None:
    host, port = meter_server.host, meter_server.port
    plain = MeterClient.connect(host, port)
    pinned = MeterClient.connect(host, port, tls_certificate_pem=meter_server.cert_pem)
    try:
        assert plain.status().value == 17
        assert plain.put_settings({"http": {"tls_on": True}}).accepted
        # The next connection is HTTPS; no power cycle needed.
        assert pinned.status().value == 17
        with pytest.raises(MeterConnectionError):
            plain.status()
        assert pinned.put_settings({"http": {"tls_on": False}}).accepted
        assert plain.status().meter_id == "12024072805"
        with pytest.raises(MeterConnectionError):
            pinned.status()
    finally:
        plain.close()
        pinned.close()


@needs_curl
def test_tls_switch_with_curl(meter_server: InProcessSimulator, tmp_path: Path) -> None:
    status, body, _ = curl(meter_server, "PUT", "/v1/settings", '{"http": {"tls_on": true}}')
    assert (status, json.loads(body)["result"]) == (200, 1)
    status, body, _ = curl(meter_server, "GET", "/v1/status", https=True)
    assert status == 200
    assert json.loads(body)["status"]["value"] == 17
    assert curl(meter_server, "GET", "/v1/status", https=False)[0] == NO_ANSWER
    # Pinning is real: another key fails although -k skips the CA check.
    other = tmp_path / "other.pem"
    other.write_bytes(_other_public_key())
    assert curl(meter_server, "GET", "/v1/status", https=True, pin=other)[0] == NO_ANSWER
    status, body, log = curl(
        meter_server, "PUT", "/v1/settings", '{"http": {"tls_on": false}}', https=True
    )
    assert "Transfer-Encoding: chunked" in log
    assert (status, json.loads(body)["result"]) == (200, 1)
    assert curl(meter_server, "GET", "/v1/status", https=False)[0] == 200


def _other_public_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_connections_of_the_old_scheme_end_after_the_switch(
    meter_server: InProcessSimulator,
) -> None:
    idle = socket.create_connection((meter_server.host, meter_server.port), timeout=5)
    idle.sendall(request("GET", "/v1/status", {}))
    idle_reader = idle.makefile("rb")
    assert read_response(idle_reader)[0] == 200
    # Its server thread goes back to waiting for a request line just after the answer.
    connections = meter_server.server.connections
    wait_until(lambda: connections.idle() == 1, 5, what="the connection to wait idle")
    body = b'{"http": {"tls_on": true}}'
    with socket.create_connection((meter_server.host, meter_server.port), timeout=5) as sock:
        sock.sendall(request("PUT", "/v1/settings", {"Content-Length": str(len(body))}, body))
        reader = sock.makefile("rb")
        status_line = reader.readline()
        headers = []
        while (line := reader.readline()) != b"\r\n":
            headers.append(line.decode().strip().lower())
        assert status_line.startswith(b"HTTP/1.1 200")
        assert "connection: close" in headers
    # The idle keep-alive connection is dropped rather than served over plain HTTP.
    assert idle_reader.read() == b""
    idle.close()
    wait_until(lambda: meter_server.server.connections.stats()["open"] == 0, 5, what="closing")
    # The next connection on the same port is TLS, with the meter's certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=1")
    with (
        socket.create_connection((meter_server.host, meter_server.port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        assert tls.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(meter_server.cert_pem)
