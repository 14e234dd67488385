"""The meter client against the simulated meter over real sockets, HTTP and pinned HTTPS.

OCMF signatures are checked with ``cryptography`` and ``lem_dcbm.ocmf`` only, never with
simulator code, so a simulator that signs wrongly cannot pass.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lem_dcbm.errors import MeterBodyError, MeterConnectionError, MeterStatusError, MeterTlsError
from lem_dcbm.harness import Simulator, wait_until
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.meter.models import TRANSACTION_ONGOING_BIT, LiveMeasure
from lem_dcbm.ocmf import parse_ocmf, verify_ocmf
from tests.support.certs import look_alike

pytestmark = pytest.mark.integration


def start_body(transaction_id: str) -> dict[str, object]:
    return {
        "evseId": "DE*LEM*E0001*1",
        "transactionId": transaction_id,
        "clientId": "client-7",
        "tariffId": 2,
        "cableId": 1,
        "userData": "integration test",
    }


def meter_requests(sim: Simulator) -> dict[str, int]:
    counts: dict[str, int] = sim.state()["requests"]
    return counts


@pytest.fixture
def client(simulator: Simulator) -> Iterator[MeterClient]:
    meter = MeterClient.connect(simulator.host, simulator.port, timeout_s=5.0)
    yield meter
    meter.close()


def test_transaction_start_energy_stop_and_verified_ocmf(
    simulator: Simulator, client: MeterClient
) -> None:
    client.api_version = "v2" if client.supports_v2() else "v1"
    status = client.status()
    assert status.time_sync_ok
    assert not status.transaction_ongoing
    tid = str(uuid.uuid4())
    simulator.set_load(power_kw=180.0, voltage_v=800.0)

    started = client.start_transaction(start_body(tid))

    assert (started.transaction_id, started.running) == (tid, True)
    assert meter_requests(simulator)[f"POST /{client.api_version}/legal"] == 1
    assert client.status().transaction_ongoing
    assert client.legal().running
    first = client.livemeasure()
    assert first.power_kw == pytest.approx(180.0)

    def risen_measure() -> LiveMeasure | None:
        measure = client.livemeasure()
        return measure if measure.energy_import_kwh > first.energy_import_kwh + 0.005 else None

    risen = wait_until(risen_measure, timeout=5, what="energy to rise under load")
    assert risen.energy_import_kwh > first.energy_import_kwh

    report = client.stop_transaction(tid)

    assert report.transaction_id == tid
    assert report.transaction_status & TRANSACTION_ONGOING_BIT == 0
    assert not report.still_running
    assert report.billable
    assert not client.status().transaction_ongoing
    sample = report.raw["meterValue"]["sampleValue"]
    assert sample["energyImportTotalStop"] > sample["energyImportTotalStart"]

    record_text = client.ocmf(tid)
    record = parse_ocmf(record_text)
    readings = record.payload["RD"]
    assert [r.get("TX") for r in readings if "TX" in r] == ["B", "E"]
    import_readings = [r["RV"] for r in readings if r["RI"] == "1-0:1.8.0"]
    assert import_readings == [
        pytest.approx(sample["energyImportTotalStart"], abs=1e-3),
        pytest.approx(sample["energyImportTotalStop"], abs=1e-3),
    ]
    assert record.payload["CI"] == "DE*LEM*E0001*1"
    # Verified with cryptography directly: the key the meter publishes, the exact payload.
    key = serialization.load_der_public_key(bytes.fromhex(status.public_key_ocmf))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    key.verify(
        bytes.fromhex(record.signature_hex),
        record.payload_text.encode("utf-8"),
        ec.ECDSA(hashes.SHA256()),
    )
    assert verify_ocmf(record_text, status.public_key_ocmf)
    tampered = record_text.replace('"TX":"E"', '"TX":"E" ', 1)
    assert not verify_ocmf(tampered, status.public_key_ocmf)
    # The same record by storage index, counting back from the latest.
    assert client.ocmf_by_index(-1) == record_text


# -- TLS ---------------------------------------------------------------------------------


def test_pinned_tls_with_the_meters_certificate_works(tls_simulator: Simulator) -> None:
    assert tls_simulator.cert_path is not None
    pem = tls_simulator.cert_path.read_text()
    client = MeterClient.connect(tls_simulator.host, tls_simulator.port, tls_certificate_pem=pem)
    try:
        assert client.status().meter_id
        # What the meter serves (line-break-less) repairs to the certificate we pinned.
        served = client.certificate()
    finally:
        client.close()
    assert "\n" in served
    pinned_again = MeterClient.connect(
        tls_simulator.host, tls_simulator.port, tls_certificate_pem=served
    )
    try:
        assert pinned_again.status().meter_id
    finally:
        pinned_again.close()


def test_look_alike_certificate_is_a_tls_error_and_reaches_no_handler(
    tls_simulator: Simulator,
) -> None:
    assert tls_simulator.cert_path is not None
    impostor = look_alike(tls_simulator.cert_path.read_text())
    before = tls_simulator.state()
    client = MeterClient.connect(
        tls_simulator.host, tls_simulator.port, tls_certificate_pem=impostor.cert_pem
    )
    try:
        with pytest.raises(MeterTlsError) as caught:
            client.status()
    finally:
        client.close()

    message = str(caught.value)
    assert message.startswith(f"GET {tls_simulator.base_url}/v1/status: TLS handshake failed")
    assert "certificate verify failed" in message
    after = tls_simulator.state()
    assert after["requests"] == before["requests"]
    assert after["connections"]["accepted"] == before["connections"]["accepted"]


def test_default_security_client_refuses_the_1024_bit_certificate(
    tls_simulator: Simulator,
) -> None:
    assert tls_simulator.cert_path is not None
    strict = ssl.create_default_context(cafile=str(tls_simulator.cert_path))
    strict.check_hostname = False
    with (
        socket.create_connection((tls_simulator.host, tls_simulator.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError) as caught,
    ):
        strict.wrap_socket(raw, server_hostname=tls_simulator.host)
    assert "too small" in str(caught.value) or "too weak" in str(caught.value)


def test_plain_http_client_cannot_talk_to_a_tls_meter(tls_simulator: Simulator) -> None:
    client = MeterClient.connect(tls_simulator.host, tls_simulator.port, timeout_s=2.0)
    try:
        # The meter's TLS server resets a connection that does not start a handshake.
        with pytest.raises(
            MeterConnectionError, match=r"GET http://[^/]+/v1/status: connection failed"
        ):
            client.status()
    finally:
        client.close()


# -- keep-alive ----------------------------------------------------------------------------


def test_twenty_requests_share_one_connection_and_survive_a_drop(
    simulator: Simulator, client: MeterClient
) -> None:
    for _ in range(10):
        client.status()
        client.livemeasure()
    state = simulator.state()
    assert sum(state["requests"].values()) == 20
    assert state["connections"]["accepted"] == 1

    assert simulator.drop_connections() == 1
    wait_until(
        lambda: simulator.state()["connections"]["open"] == 0, what="idle connections closed"
    )

    assert client.status().meter_id
    assert simulator.state()["connections"]["accepted"] == 2


# -- faults --------------------------------------------------------------------------------


def test_latency_beyond_the_timeout_is_a_connection_error(simulator: Simulator) -> None:
    client = MeterClient.connect(simulator.host, simulator.port, timeout_s=0.3)
    simulator.set_faults(latency_ms=1500, paths=["/v1/status"], count=1)
    try:
        with pytest.raises(
            MeterConnectionError,
            match=r"GET http://[^/]+/v1/status: no answer within 0.3 s",
        ):
            client.status()
        # The timeout was per request: the next one, without latency, succeeds.
        assert client.status().meter_id
    finally:
        client.close()


def test_http_status_fault_is_a_status_error(simulator: Simulator, client: MeterClient) -> None:
    simulator.set_faults(http_status=503, paths=["/v1/status"])
    with pytest.raises(MeterStatusError) as caught:
        client.status()
    assert caught.value.status == 503
    assert "simulated fault" in caught.value.body_excerpt
    assert str(caught.value).startswith(
        f"GET {simulator.base_url}/v1/status: unexpected HTTP status 503"
    )


def test_malformed_body_fault_is_a_body_error(simulator: Simulator, client: MeterClient) -> None:
    simulator.set_faults(malformed_body=True, paths=["/v1/livemeasure"])
    with pytest.raises(MeterBodyError) as caught:
        client.livemeasure()
    assert str(caught.value).startswith(
        f"GET {simulator.base_url}/v1/livemeasure: unexpected body (HTTP 200): not JSON"
    )


def test_reset_connection_fault_is_a_connection_error(
    simulator: Simulator, client: MeterClient
) -> None:
    simulator.set_faults(reset_connection=True, paths=["/v1/status"])
    with pytest.raises(
        MeterConnectionError, match=r"GET http://[^/]+/v1/status: connection failed"
    ):
        client.status()
    # A GET is sent exactly twice: the original and one resend on a fresh connection.
    state = simulator.state()
    assert state["requests"]["GET /v1/status"] == 2
    assert state["faults_applied"] == 2
    assert state["connections"]["accepted"] == 2
    simulator.clear_faults()
    assert client.status().meter_id


def test_a_single_reset_is_absorbed_by_the_resend_for_get(
    simulator: Simulator, client: MeterClient
) -> None:
    simulator.set_faults(reset_connection=True, paths=["/v1/status"], count=1)
    assert client.status().meter_id
    assert simulator.state()["faults_applied"] == 1


def test_reset_start_is_not_resent_even_if_the_meter_acted_on_it(
    simulator: Simulator, client: MeterClient
) -> None:
    tid = str(uuid.uuid4())
    simulator.set_faults(reset_connection=True, after_processing=True, paths=["/v1/legal"], count=1)
    with pytest.raises(
        MeterConnectionError, match=r"POST http://[^/]+/v1/legal: connection failed"
    ):
        client.start_transaction(start_body(tid))

    # The meter did start it: resending the POST would have been refused or doubled.
    assert meter_requests(simulator)["POST /v1/legal"] == 1
    assert simulator.state()["running_transaction"] == tid
    assert client.legal().transaction_id == tid


def test_requests_leave_through_the_configured_interface(simulator: Simulator) -> None:
    bound = MeterClient.connect(simulator.host, simulator.port, timeout_s=5.0, interface="lo")
    try:
        assert bound.status().meter_id == simulator.state()["meter_id"]
    finally:
        bound.close()


def test_measurement_timeout_override(simulator: Simulator) -> None:
    client = MeterClient.connect(simulator.host, simulator.port, timeout_s=5.0)
    try:
        simulator.set_faults(latency_ms=600, paths=["/v1/livemeasure"], count=1)
        with pytest.raises(MeterConnectionError, match="no answer within 0.2 s"):
            client.livemeasure(timeout_s=0.2)
        simulator.set_faults(latency_ms=600, paths=["/v1/livemeasure"], count=1)
        assert client.livemeasure().voltage_v > 0
    finally:
        client.close()
