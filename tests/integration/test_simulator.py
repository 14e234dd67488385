"""The simulator over real sockets: endpoints, TLS, faults, control API, connections."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from lem_dcbm.errors import MeterConnectionError
from lem_dcbm.harness import Simulator, pinned_context, start_simulator, wait_until
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.simulator.certs import generate_certificate

pytestmark = pytest.mark.integration

START = {
    "evseId": "DE*LEM*E1",
    "transactionId": "it-1",
    "clientId": "tag,it-1",
    "tariffId": 0,
    "cableId": 0,
    "userData": "",
}


def connect(sim: Simulator, cert: Path | None = None) -> http.client.HTTPConnection:
    """A keep-alive connection to the meter; over TLS pinned to ``cert`` (default: its own)."""
    if sim.tls:
        context = pinned_context(cert or sim.cert_path or Path("missing"))
        return http.client.HTTPSConnection(sim.host, sim.port, timeout=5, context=context)
    return http.client.HTTPConnection(sim.host, sim.port, timeout=5)


def call(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> tuple[int, str, str]:
    """One request on ``conn``: (status, content type, body text)."""
    payload = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    return response.status, response.getheader("Content-Type", ""), response.read().decode()


def verify(record: str, public_key_hex: str) -> dict[str, Any]:
    payload = record[len("OCMF|") : record.rindex("|")]
    signature = json.loads(record[record.rindex("|") + 1 :])
    key = load_der_public_key(bytes.fromhex(public_key_hex))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(bytes.fromhex(signature["SD"]), payload.encode(), ec.ECDSA(hashes.SHA256()))
    parsed: dict[str, Any] = json.loads(payload)
    return parsed


def exercise_every_endpoint(sim: Simulator) -> None:
    conn = connect(sim)
    try:
        status, kind, text = call(conn, "GET", "/v1/status")
        assert (status, kind) == (200, "application/json")
        key = json.loads(text)["publicKeyOcmf"]
        assert json.loads(text)["status"]["value"] == 17
        for path in ("/v1/livemeasure", "/v2/livemeasure", "/v1/settings", "/v1/logbook"):
            assert call(conn, "GET", path)[0] == 200, path
        assert call(conn, "GET", "/v1/ocmf")[0] == 404
        status, _, text = call(conn, "POST", "/v2/legal", {**START, "TT": "t", "SC": 1})
        assert status == 201
        assert json.loads(text) == {**START, "TT": "t", "SC": 1, "running": True}
        assert json.loads(call(conn, "GET", "/v2/legal")[2])["running"] is True
        status, kind, running_record = call(conn, "GET", "/v2/ocmf?transactionId=it-1")
        assert (status, kind) == (200, "text/plain; charset=utf-8")
        assert len(verify(running_record, key)["RD"]) == 2
        status, _, text = call(conn, "PUT", "/v2/legal?transactionId=it-1", {"running": False})
        assert status == 200
        assert json.loads(text)["meterValue"]["transactionStatus"] == 17
        for path in ("/v1/ocmf", "/v1/ocmf/0", "/v1/ocmf/-1", "/v2/ocmf?transactionId=it-1"):
            status, _, record = call(conn, "GET", path)
            assert status == 200, path
            assert len(verify(record, key)["RD"]) == 4
        status, _, text = call(conn, "PUT", "/v1/settings", {"ocmfId": {"IT": 5}})
        assert json.loads(text) == {"meterId": "12024072805", "result": 1}
        certificate = json.loads(call(conn, "GET", "/v1/certificate")[2])["certificate"]
        begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
        assert certificate.startswith(begin + "MII")
        assert f"\n{end}" not in certificate
        assert sim.cert_path is not None
        repaired = certificate.replace(begin, begin + "\n").replace(end, "\n" + end) + "\n"
        assert repaired == sim.cert_path.read_text()
        assert call(conn, "GET", "/v2/status")[0] == 404
        assert call(conn, "GET", "/v1/nothing")[0] == 404
        assert call(conn, "DELETE", "/v1/status")[0] == 405
    finally:
        conn.close()
    counts = sim.state()["requests"]
    assert counts["GET /v1/status"] == 1
    assert counts["POST /v2/legal"] == 1
    assert counts["GET /v1/ocmf/{index}"] == 2
    assert counts["PUT /v1/settings"] == 1
    assert not any(key.split()[1].startswith("/_sim") for key in counts)


def test_every_endpoint_answers_over_http(simulator: Simulator) -> None:
    exercise_every_endpoint(simulator)
    assert simulator.state()["connections"]["accepted"] == 1


def test_every_endpoint_answers_over_https(tls_simulator: Simulator) -> None:
    assert tls_simulator.base_url.startswith("https://127.0.0.1:")
    exercise_every_endpoint(tls_simulator)


def test_a_default_security_client_refuses_the_1024_bit_certificate(
    tls_simulator: Simulator,
) -> None:
    context = ssl.create_default_context(cafile=str(tls_simulator.cert_path))
    context.check_hostname = False
    with (
        socket.create_connection((tls_simulator.host, tls_simulator.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw).close()
    state = tls_simulator.state()
    assert state["requests"] == {}
    assert state["connections"]["accepted"] == 0


def test_a_look_alike_certificate_fails_before_any_request(
    tls_simulator: Simulator, tmp_path: Path
) -> None:
    rogue = tmp_path / "rogue.pem"
    rogue.write_bytes(generate_certificate("DCBM 12024072805").cert_pem)
    conn = connect(tls_simulator, cert=rogue)
    with pytest.raises(ssl.SSLCertVerificationError):
        call(conn, "GET", "/v1/status")
    conn.close()
    # The server thread notes the failed handshake once the client's alert reaches it.
    state = wait_until(
        lambda: (s := tls_simulator.state())["tls_handshake_failures"] == 1 and s,
        5,
        what="the failed handshake to be counted",
    )
    assert state["requests"] == {}
    assert state["connections"] == {"accepted": 0, "open": 0}


def test_a_v1_meter_has_no_v2_paths(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, api="v1")
    try:
        base = sim.base_url
        assert requests.get(f"{base}/v2/livemeasure", timeout=5).status_code == 404
        assert requests.post(f"{base}/v2/legal", json=START, timeout=5).status_code == 404
        assert requests.get(f"{base}/v1/livemeasure", timeout=5).status_code == 200
        version = requests.get(f"{base}/v1/status", timeout=5).json()["version"]
        assert version["applicationFirmwareVersion"] == "MU-0.1.4.0"
        answer = requests.post(f"{base}/v1/legal", json={**START, "SC": 1}, timeout=5)
        assert answer.status_code == 400
        assert answer.json()["field"] == "SC"
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("field", "value"),
    [("transactionId", ""), ("clientId", "c" * 38), ("cableId", 9), ("userData", "u" * 129)],
)
def test_limits_are_refused_with_400_naming_the_field(
    simulator: Simulator, field: str, value: object
) -> None:
    answer = requests.post(
        f"{simulator.base_url}/v1/legal", json={**START, field: value}, timeout=5
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == field
    assert field in answer.json()["error"]


def test_bad_json_preconditions_and_the_minimum_duration(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, min_transaction_seconds=60, unsynced=True)
    try:
        base = sim.base_url
        bad = requests.post(f"{base}/v1/legal", data="{nope", timeout=5)
        assert (bad.status_code, bad.json()["field"]) == (400, "body")
        refused = requests.post(f"{base}/v1/legal", json=START, timeout=5)
        assert refused.status_code == 409
        assert refused.json()["condition"] == "timeSyncStatusIsOk"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        synced = requests.put(f"{base}/v1/settings", json={"time": {"utc": now}}, timeout=5)
        assert synced.json()["result"] == 1
        assert requests.post(f"{base}/v1/legal", json=START, timeout=5).status_code == 201
        during = requests.put(f"{base}/v1/settings", json={"time": {"utc": now}}, timeout=5)
        assert (during.status_code, during.json()["result"]) == (200, 0)
        early = requests.put(
            f"{base}/v1/legal?transactionId=it-1", json={"running": False}, timeout=5
        )
        assert early.status_code == 409
        assert early.json()["condition"] == "minimumDuration"
        sim.set_bits(status={"suLinkStatusIsOk": False})
        assert requests.get(f"{base}/v1/status", timeout=5).json()["status"]["value"] == 20
    finally:
        sim.stop()


# -- faults ---------------------------------------------------------------------------


def test_http_status_fault_for_count_requests(simulator: Simulator) -> None:
    simulator.set_faults(http_status=503, paths=["/v1/status"], count=2)
    base = simulator.base_url
    with requests.Session() as session:
        first = session.get(f"{base}/v1/status", timeout=5)
        assert first.status_code == 503
        assert "error" in first.json()
        assert session.get(f"{base}/v1/livemeasure", timeout=5).status_code == 200
        assert session.get(f"{base}/v1/status", timeout=5).status_code == 503
        assert session.get(f"{base}/v1/status", timeout=5).status_code == 200
    state = simulator.state()
    assert state["faults"] is None
    assert state["faults_applied"] == 2
    assert state["requests"]["GET /v1/status"] == 3


def test_malformed_body_and_latency_faults(simulator: Simulator) -> None:
    base = simulator.base_url
    simulator.set_faults(malformed_body=True, latency_ms=300)
    started = time.monotonic()
    answer = requests.get(f"{base}/v1/livemeasure", timeout=5)
    assert time.monotonic() - started >= 0.3
    assert answer.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)
    simulator.clear_faults()
    assert requests.get(f"{base}/v1/livemeasure", timeout=5).json()["power"] == 0.0


def test_drip_and_truncate_faults_deliver_the_answer_badly(simulator: Simulator) -> None:
    # Each pause within the client's timeout; the meter's client still gives up in time.
    client = MeterClient.connect(simulator.host, simulator.port, timeout_s=0.4)
    try:
        simulator.set_faults(drip_ms=100, paths=["/v1/status"], count=1)
        started = time.monotonic()
        with pytest.raises(MeterConnectionError, match="no answer within 0.4 s"):
            client.status()
        assert time.monotonic() - started < 1.5
        simulator.set_faults(truncate_body=True, paths=["/v1/status"], count=1)
        with pytest.raises(MeterConnectionError, match="IncompleteRead"):
            client.status()
        assert client.status().meter_id
    finally:
        client.close()
    # A patient client gets the whole dribbled answer.
    simulator.set_faults(drip_ms=20, paths=["/v1/livemeasure"], count=1)
    started = time.monotonic()
    assert requests.get(f"{simulator.base_url}/v1/livemeasure", timeout=5).json()["power"] == 0.0
    assert time.monotonic() - started >= 0.2


def test_reset_connection_fault_gives_no_answer(simulator: Simulator) -> None:
    simulator.set_faults(reset_connection=True, paths=["/v1/legal"], count=1)
    base = simulator.base_url
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{base}/v1/legal", json=START, timeout=5)
    # The request never reached the meter: a start now succeeds.
    assert requests.post(f"{base}/v1/legal", json=START, timeout=5).status_code == 201


def test_a_reset_after_processing_loses_only_the_answer(simulator: Simulator) -> None:
    simulator.set_faults(reset_connection=True, after_processing=True, count=1)
    base = simulator.base_url
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{base}/v1/legal", json=START, timeout=5)
    again = requests.post(f"{base}/v1/legal", json=START, timeout=5)
    assert again.status_code == 409
    assert simulator.state()["running_transaction"] == "it-1"


def test_tamper_fault_breaks_the_signature_of_served_records(simulator: Simulator) -> None:
    base = simulator.base_url
    key = requests.get(f"{base}/v1/status", timeout=5).json()["publicKeyOcmf"]
    simulator.set_load(power_kw=100.0)
    assert requests.post(f"{base}/v2/legal", json=START, timeout=5).status_code == 201
    simulator.set_faults(tamper_ocmf=True, paths=["/v2/ocmf"])
    tampered = requests.get(f"{base}/v2/ocmf", timeout=5).text
    honest = requests.get(f"{base}/v1/ocmf", timeout=5).text
    verify(honest, key)
    with pytest.raises(InvalidSignature):
        verify(tampered, key)
    assert tampered != honest


def test_a_method_limited_fault_spares_other_methods(simulator: Simulator) -> None:
    base = simulator.base_url
    simulator.set_faults(http_status=503, paths=["/v1/legal"], methods=["POST"])
    with requests.Session() as session:
        assert session.get(f"{base}/v1/legal", timeout=5).status_code == 200
        assert session.post(f"{base}/v1/legal", json=START, timeout=5).status_code == 503
        assert session.get(f"{base}/v1/legal", timeout=5).json()["running"] is False
    assert simulator.state()["faults"]["methods"] == ["POST"]


def test_a_timed_fault_clears_itself(simulator: Simulator) -> None:
    base = simulator.base_url
    simulator.set_faults(http_status=503, paths=["/v1/status"], for_ms=400)
    assert requests.get(f"{base}/v1/status", timeout=5).status_code == 503
    wait_until(lambda: simulator.state()["faults"] is None, 5, what="the fault to expire")
    assert requests.get(f"{base}/v1/status", timeout=5).status_code == 200


def test_ocmf_of_serves_another_transactions_signed_record(simulator: Simulator) -> None:
    base = simulator.base_url
    key = requests.get(f"{base}/v1/status", timeout=5).json()["publicKeyOcmf"]
    for tx_id in ("it-1", "it-2"):
        body = {**START, "transactionId": tx_id, "clientId": f"tag,{tx_id}"}
        assert requests.post(f"{base}/v1/legal", json=body, timeout=5).status_code == 201
        stop = f"{base}/v1/legal?transactionId={tx_id}"
        assert requests.put(stop, json={"running": False}, timeout=5).status_code == 200
    first = requests.get(f"{base}/v1/ocmf?transactionId=it-1", timeout=5).text
    simulator.set_faults(ocmf_of="it-1")
    for path in ("/v1/ocmf", "/v2/ocmf?transactionId=it-2", "/v1/ocmf/-1"):
        answer = requests.get(f"{base}{path}", timeout=5)
        assert (answer.status_code, answer.text) == (200, first), path
    assert verify(first, key)["ID"] == "tag,it-1"
    # Other endpoints are untouched and not counted.
    assert requests.get(f"{base}/v1/legal", timeout=5).json()["transactionId"] == "it-2"
    assert simulator.state()["faults_applied"] == 3
    simulator.set_faults(ocmf_of="never-seen")
    missing = requests.get(f"{base}/v1/ocmf", timeout=5)
    assert missing.status_code == 404
    assert "never-seen" in missing.json()["error"]


# -- control API ----------------------------------------------------------------------


def test_load_bits_and_clock_controls(simulator: Simulator) -> None:
    base = simulator.base_url
    simulator.set_load(power_kw=360.0, voltage_v=800.0, temperature_c=40.0)
    first = requests.get(f"{base}/v1/livemeasure", timeout=5).json()
    assert (first["power"], first["voltage"], first["current"]) == (360.0, 800.0, 450.0)
    wait_until(
        lambda: (
            requests.get(f"{base}/v1/livemeasure", timeout=5).json()["energyImportTotal"]
            > first["energyImportTotal"]
        ),
        5,
        what="energy to rise",
    )
    simulator.set_bits(status={"tamperingIsDetected": True}, errors={"muStateIsFailed": True})
    status = requests.get(f"{base}/v1/status", timeout=5).json()
    assert status["status"]["value"] == 17 | 2 | 8
    assert status["errors"]["value"] == 1 << 10
    assert requests.post(f"{base}/v1/legal", json=START, timeout=5).status_code == 409
    simulator.control("PUT", "/_sim/clock", {"offset_s": -366 * 86400})
    year = int(requests.get(f"{base}/v1/status", timeout=5).json()["time"][:4])
    assert year == time.gmtime().tm_year - 1
    state = simulator.state()
    assert state["forced"]["status"] == {"tamperingIsDetected": True}
    assert state["time_sync"]["clock_offset_s"] == -366 * 86400


def test_reboot_loses_early_settings_and_keeps_the_transaction(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, extra_args=["--settings-window-seconds", "0.5"])
    try:
        base = sim.base_url
        assert requests.put(
            f"{base}/v1/settings", json={"time": {"tz": "+01:00"}}, timeout=5
        ).json() == {"meterId": "12024072805", "result": 1}
        wait_until(lambda: not sim.state()["settings_window_open"], 5, what="window to close")
        requests.put(f"{base}/v1/settings", json={"ocmfId": {"IT": 4}}, timeout=5)
        assert requests.post(f"{base}/v1/legal", json=START, timeout=5).status_code == 201
        sim.reboot()
        settings = requests.get(f"{base}/v1/settings", timeout=5).json()
        assert (settings["time"]["tz"], settings["ocmfId"]["IT"]) == ("+00:00", 4)
        writes = sim.state()["settings_writes"]
        assert [w["persisted"] for w in writes] == [False, True]
        assert sim.state()["running_transaction"] == "it-1"
        stop = requests.put(
            f"{base}/v1/legal?transactionId=it-1", json={"running": False}, timeout=5
        )
        assert stop.status_code == 200
    finally:
        sim.stop()


def test_bad_control_requests_are_refused(simulator: Simulator) -> None:
    for method, path, body in (
        ("PUT", "/_sim/faults", {"colour": 1}),
        ("PUT", "/_sim/load", {"power_kw": "lots"}),
        ("PUT", "/_sim/bits", {"status": {"noSuchBit": True}}),
        ("GET", "/_sim/nothing", None),
    ):
        with pytest.raises(RuntimeError, match="HTTP 4"):
            simulator.control(method, path, body)


# -- connections ----------------------------------------------------------------------


def test_keep_alive_one_connection_and_recovery_after_a_drop(simulator: Simulator) -> None:
    base = simulator.base_url
    with requests.Session() as session:
        for _ in range(20):
            assert session.get(f"{base}/v1/livemeasure", timeout=5).status_code == 200
        simulator.state()
        assert simulator.state()["connections"] == {"accepted": 1, "open": 1}
        assert simulator.drop_connections() >= 1
        wait_until(lambda: simulator.state()["connections"]["open"] == 0, 5, what="the drop")
        assert session.get(f"{base}/v1/status", timeout=5).status_code == 200
    state = simulator.state()
    assert state["connections"]["accepted"] == 2
    assert state["requests"]["GET /v1/livemeasure"] == 20


def test_idle_connections_time_out(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, extra_args=["--idle-timeout-seconds", "0.3"])
    try:
        conn = connect(sim)
        assert call(conn, "GET", "/v1/status")[0] == 200
        assert sim.state()["connections"]["open"] == 1
        wait_until(lambda: sim.state()["connections"]["open"] == 0, 5, what="idle timeout")
        conn.close()
    finally:
        sim.stop()


# -- process --------------------------------------------------------------------------


def test_restart_keeps_port_identity_and_certificate(tls_simulator: Simulator) -> None:
    before = tls_simulator.state()
    port = tls_simulator.port
    conn = connect(tls_simulator)
    key = json.loads(call(conn, "GET", "/v1/status")[2])["publicKeyOcmf"]
    conn.close()
    tls_simulator.stop()
    tls_simulator.start()
    assert tls_simulator.port == port
    conn = connect(tls_simulator)
    assert json.loads(call(conn, "GET", "/v1/status")[2])["publicKeyOcmf"] == key
    conn.close()
    assert tls_simulator.state()["meter_id"] == before["meter_id"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_process_with_exit_0(tmp_path: Path, signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lem_dcbm.simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        assert int(line.rsplit(":", 1)[1]) > 0
        process.send_signal(signum)
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if process.stdout:
            process.stdout.close()


def test_tls_switched_on_in_settings_serves_https_at_once_and_after_a_reboot(
    tmp_path: Path,
) -> None:
    sim = start_simulator(tmp_path, extra_args=["--settings-window-seconds", "0"])
    try:
        answer = requests.put(
            f"{sim.base_url}/v1/settings", json={"http": {"tls_on": True}}, timeout=5
        )
        assert answer.json()["result"] == 1
        assert answer.headers["Connection"] == "close"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{sim.host}:{sim.port}/v1/status", timeout=5)
        sim.tls = True  # the helper follows the scheme only at a reboot
        conn = connect(sim)
        assert call(conn, "GET", "/v1/status")[0] == 200
        conn.close()
        sim.reboot()
        assert sim.tls is True
        assert sim.state()["settings"]["http"]["tls_on"] is True
    finally:
        sim.stop()
