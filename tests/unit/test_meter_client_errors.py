"""Every error path of the meter client, pinned with ``responses`` (and one raw socket server).

Each failure must surface as the right ``MeterError`` subclass whose message names the
method, the endpoint and, for answers, the status and an excerpt of the body.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lem_dcbm.errors import (
    MeterBodyError,
    MeterConnectionError,
    MeterError,
    MeterStatusError,
    MeterTlsError,
)
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.meter.transport import HttpTransport, _ConnectFailed, is_stale_connection
from tests.support.certs import line_breakless, make_self_signed
from tests.support.pool_mock import PoolMock, mocked_pool

BASE = "http://meter.test:8080"

STATUS_BODY = {
    "status": {
        "value": 17,
        "bits": {
            "suLinkStatusIsOk": True,
            "muFatalErrorOccured": False,
            "transactionIsOnGoing": False,
            "tamperingIsDetected": False,
            "timeSyncStatusIsOk": True,
            "overTemperatureIsDetected": False,
            "reversedVoltage": False,
            "suMeasureFailureOccurred": False,
        },
    },
    "version": {"applicationFirmwareVersion": "MU-2.3.0.1"},
    "time": "2026-11-22T10:00:00+00:00",
    "meterId": "12024072805",
    "errors": {"value": 0, "bits": {"muInitIsFailed": False}},
    "publicKey": "ab",
    "publicKeyOcmf": "3059",
}
LIVE_BODY = {
    "voltage": 400.1,
    "current": 125.0,
    "power": 50.0,
    "temperatureH": 31.5,
    "temperatureL": 29.0,
    "energyImportTotal": 188.977,
    "energyExportTotal": 0.0,
    "timestamp": "2026-11-22T10:00:00+01:00",
}
START_BODY = {"evseId": "DE*ABC*E1", "transactionId": "tx-1", "clientId": "c", "tariffId": 0}
OCMF = 'OCMF|{"FV":"1.0","RD":[{"TX":"B","RV":1.5}]}|{"SA":"ECDSA-secp256r1-SHA256","SD":"3045"}'


@pytest.fixture
def client() -> Iterator[MeterClient]:
    meter = MeterClient.connect("meter.test", 8080, timeout_s=5.0)
    yield meter
    meter.close()


@pytest.fixture
def mocked() -> Iterator[PoolMock]:
    with mocked_pool() as pool:
        yield pool


def disconnect() -> http.client.RemoteDisconnected:
    """What http.client raises when the server closed a kept-alive connection unanswered."""
    return http.client.RemoteDisconnected("Remote end closed connection without response")


def refused() -> _ConnectFailed:
    """What the connection raises when nothing listens on the meter's port."""
    inner = _ConnectFailed("[Errno 111] Connection refused")
    inner.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return inner


def connect_timeout() -> _ConnectFailed:
    """What the connection raises when the meter does not accept within the timeout."""
    inner = _ConnectFailed("timed out")
    inner.__cause__ = TimeoutError("timed out")
    return inner


# -- connection failures -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "error_class", "detail"),
    [
        (TimeoutError("timed out"), MeterConnectionError, "no answer within 5 s"),
        (connect_timeout(), MeterConnectionError, "no answer within 5 s"),
        (refused(), MeterConnectionError, "connection failed: ConnectionRefusedError"),
        (
            ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate"),
            MeterTlsError,
            "TLS handshake failed",
        ),
        (
            http.client.IncompleteRead(b"partial", 10),
            MeterConnectionError,
            "connection failed: IncompleteRead",
        ),
    ],
    ids=["read-timeout", "connect-timeout", "refused", "tls", "cut-off"],
)
def test_connection_failures_map_to_the_tree(
    client: MeterClient,
    mocked: PoolMock,
    raised: Exception,
    error_class: type[MeterError],
    detail: str,
) -> None:
    mocked.add("GET", "/v1/status", raises=raised)

    with pytest.raises(MeterError) as caught:
        client.status()

    assert type(caught.value) is error_class
    assert str(caught.value).startswith(f"GET {BASE}/v1/status: ")
    assert detail in str(caught.value)
    assert caught.value.__cause__ is raised
    # Not a stale connection: nothing is sent twice.
    assert len(mocked.calls) == 1


def test_tls_error_is_also_a_connection_error(client: MeterClient, mocked: PoolMock) -> None:
    mocked.add("GET", "/v1/livemeasure", raises=ssl.SSLError("handshake"))
    with pytest.raises(MeterConnectionError):
        client.livemeasure()


def test_other_request_errors_are_meter_errors(mocked: PoolMock) -> None:
    transport = HttpTransport(BASE, timeout_s=1.0)
    mocked.add("GET", "/v1/status", raises=ValueError("bad header"))
    with pytest.raises(MeterError) as caught:
        transport.request("GET", "/v1/status")
    assert not isinstance(caught.value, MeterConnectionError)
    assert str(caught.value) == f"GET {BASE}/v1/status: unreadable answer: ValueError: bad header"


# -- stale keep-alive connections ---------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_idempotent_request_is_resent_once_after_a_dropped_connection(
    mocked: PoolMock, method: str
) -> None:
    transport = HttpTransport(BASE, timeout_s=1.0)
    mocked.add(method, "/v1/settings", raises=disconnect())
    mocked.add(method, "/v1/settings", json={"result": 1})

    assert transport.request(method, "/v1/settings") == (200, '{"result": 1}')
    assert len(mocked.calls) == 2


def test_a_second_dropped_connection_is_a_connection_error(mocked: PoolMock) -> None:
    transport = HttpTransport(BASE, timeout_s=1.0)
    mocked.add("GET", "/v1/status", raises=disconnect())
    mocked.add("GET", "/v1/status", raises=disconnect())
    mocked.add("GET", "/v1/status", json={})

    with pytest.raises(
        MeterConnectionError, match=f"GET {BASE}/v1/status: connection failed: RemoteDisconnected"
    ):
        transport.request("GET", "/v1/status")
    assert len(mocked.calls) == 2


def test_post_is_never_resent_by_the_transport(client: MeterClient, mocked: PoolMock) -> None:
    mocked.add("POST", "/v1/legal", raises=disconnect())
    mocked.add("POST", "/v1/legal", status=201, json={"transactionId": "tx-1", "running": True})

    with pytest.raises(MeterConnectionError, match=f"POST {BASE}/v1/legal: connection failed"):
        client.start_transaction(START_BODY)
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(
    ("exc", "stale"),
    [
        (disconnect(), True),
        (ConnectionResetError(104, "reset"), True),
        (BrokenPipeError(32, "pipe"), True),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), True),
        (refused(), False),
        (TimeoutError("timed out"), False),
        (http.client.BadStatusLine("something"), False),
    ],
    ids=["disconnected", "reset", "broken-pipe", "tls-eof", "refused", "timeout", "unknown"],
)
def test_stale_connection_classification(exc: BaseException, stale: bool) -> None:
    assert is_stale_connection(exc) is stale


# -- unexpected statuses -------------------------------------------------------------------

CALLS: dict[str, tuple[str, str, Callable[[MeterClient], object]]] = {
    "status": ("GET", "/v1/status", lambda c: c.status()),
    "livemeasure": ("GET", "/v1/livemeasure", lambda c: c.livemeasure()),
    "legal": ("GET", "/v1/legal", lambda c: c.legal()),
    "start": ("POST", "/v1/legal", lambda c: c.start_transaction(START_BODY)),
    "stop": ("PUT", "/v1/legal?transactionId=tx-1", lambda c: c.stop_transaction("tx-1")),
    "ocmf": ("GET", "/v1/ocmf?transactionId=tx-1", lambda c: c.ocmf("tx-1")),
    "ocmf-index": ("GET", "/v1/ocmf/-1", lambda c: c.ocmf_by_index(-1)),
    "settings": ("GET", "/v1/settings", lambda c: c.settings()),
    "put-settings": ("PUT", "/v1/settings", lambda c: c.put_settings({"time": {"tz": "+01:00"}})),
    "certificate": ("GET", "/v1/certificate", lambda c: c.certificate()),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_server_error_is_a_status_error_naming_everything(
    client: MeterClient, mocked: PoolMock, name: str
) -> None:
    method, endpoint, call = CALLS[name]
    mocked.add(method, endpoint, status=500, body="Internal Server Error: sensor busy")

    with pytest.raises(MeterStatusError) as caught:
        call(client)

    error = caught.value
    assert (error.method, error.endpoint, error.status) == (method, endpoint, 500)
    assert str(error) == (
        f"{method} {BASE}{endpoint}: unexpected HTTP status 500, "
        "body: 'Internal Server Error: sensor busy'"
    )


@pytest.mark.parametrize("name", list(CALLS))
def test_malformed_json_is_a_body_error_naming_everything(
    client: MeterClient, mocked: PoolMock, name: str
) -> None:
    method, endpoint, call = CALLS[name]
    status = 201 if name == "start" else 200
    mocked.add(method, endpoint, status=status, body='{"voltage": 400.1, "curr')

    with pytest.raises(MeterBodyError) as caught:
        call(client)

    error = caught.value
    assert (error.method, error.endpoint, error.status) == (method, endpoint, status)
    message = str(error)
    assert message.startswith(f"{method} {BASE}{endpoint}: unexpected body (HTTP {status}): ")
    assert 'body: \'{"voltage": 400.1, "curr\'' in message


def test_start_answered_with_200_instead_of_201_is_a_status_error(
    client: MeterClient, mocked: PoolMock
) -> None:
    mocked.add("POST", "/v1/legal", status=200, json={"transactionId": "tx-1", "running": True})
    with pytest.raises(MeterStatusError, match=f"POST {BASE}/v1/legal: unexpected HTTP status 200"):
        client.start_transaction(START_BODY)


def test_refused_start_keeps_the_meters_reason(client: MeterClient, mocked: PoolMock) -> None:
    mocked.add("POST", "/v1/legal", status=400, json={"error": "transactionId too long"})
    with pytest.raises(MeterStatusError) as caught:
        client.start_transaction(START_BODY)
    assert caught.value.status == 400
    assert "transactionId too long" in caught.value.body_excerpt


def test_long_bodies_are_cut_to_an_excerpt(client: MeterClient, mocked: PoolMock) -> None:
    mocked.add("GET", "/v1/status", status=503, body="x" * 5000)
    with pytest.raises(MeterStatusError) as caught:
        client.status()
    assert len(caught.value.body_excerpt) == 200
    assert caught.value.body_excerpt.endswith("...")


# -- unexpected bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        (
            "status",
            {k: v for k, v in STATUS_BODY.items() if k != "meterId"},
            "field 'meterId' is missing",
        ),
        (
            "status",
            {**STATUS_BODY, "status": {"value": "17", "bits": {}}},
            "field 'status.value' has the wrong type",
        ),
        (
            "livemeasure",
            {k: v for k, v in LIVE_BODY.items() if k != "power"},
            "field 'power' is missing",
        ),
        ("livemeasure", [LIVE_BODY], "expected an object"),
        ("legal", {"transactionId": "tx-1"}, "field 'running' is missing"),
        (
            "stop",
            {"transactionId": "tx-1", "meterValue": {}},
            "field 'meterValue.transactionStatus' is missing",
        ),
        ("put-settings", {"meterId": "1"}, "field 'result' is missing"),
        ("settings", ["not", "an", "object"], "expected a JSON object"),
        ("certificate", {"cert": "x"}, "field 'certificate' is missing"),
        (
            "certificate",
            {"certificate": "-----BEGIN CERTIFICATE-----AAAA-----END CERTIFICATE-----"},
            "X.509",
        ),
    ],
)
def test_missing_or_wrong_fields_are_body_errors_naming_the_field(
    client: MeterClient, mocked: PoolMock, name: str, body: Any, field: str
) -> None:
    method, endpoint, call = CALLS[name]
    mocked.add(method, endpoint, json=body)

    with pytest.raises(MeterBodyError) as caught:
        call(client)

    assert field in caught.value.reason
    assert str(caught.value).startswith(f"{method} {BASE}{endpoint}: unexpected body (HTTP 200): ")


def test_start_that_is_not_running_is_a_body_error(client: MeterClient, mocked: PoolMock) -> None:
    mocked.add("POST", "/v1/legal", status=201, json={"transactionId": "tx-1", "running": False})

    with pytest.raises(MeterBodyError) as caught:
        client.start_transaction(START_BODY)

    message = str(caught.value)
    assert message.startswith(f"POST {BASE}/v1/legal: unexpected body (HTTP 201): ")
    assert "not running" in message
    assert '"running": false' in message


@pytest.mark.parametrize(
    "body",
    ["", "<html>404</html>", '{"ocmf": null}', "OCMF", '"not a record"', "  OCMF|{}|{}"],
)
def test_non_ocmf_body_is_a_body_error(client: MeterClient, mocked: PoolMock, body: str) -> None:
    mocked.add("GET", "/v1/ocmf", body=body)
    with pytest.raises(
        MeterBodyError,
        match=rf"GET {BASE}/v1/ocmf: unexpected body \(HTTP 200\): not an OCMF record",
    ):
        client.ocmf()


def test_two_records_in_one_object_are_ambiguous(client: MeterClient, mocked: PoolMock) -> None:
    mocked.add("GET", "/v1/ocmf", json={"a": OCMF, "b": OCMF})
    with pytest.raises(MeterBodyError):
        client.ocmf()


def test_v2_probe_404_is_false_200_true_else_status_error(
    client: MeterClient, mocked: PoolMock
) -> None:
    url = "/v2/livemeasure"
    mocked.add("GET", url, status=404, body="Not Found")
    assert client.supports_v2() is False
    mocked.replace("GET", url, status=200, json=LIVE_BODY)
    assert client.supports_v2() is True
    mocked.replace("GET", url, status=500, body="busy")
    with pytest.raises(
        MeterStatusError,
        match=f"GET {BASE}/v2/livemeasure: unexpected HTTP status 500, body: 'busy'",
    ):
        client.supports_v2()


# -- successful calls: paths, bodies, exact OCMF ---------------------------------------------


def test_happy_paths_parse_into_models(client: MeterClient, mocked: PoolMock) -> None:
    mocked.add("GET", "/v1/status", json=STATUS_BODY)
    mocked.add("GET", "/v1/livemeasure", json=LIVE_BODY)
    mocked.add("GET", "/v1/settings", json={"ocmfId": {"IT": 3}})
    mocked.add("PUT", "/v1/settings", json={"meterId": "12024072805", "result": 0})

    assert client.status().meter_id == "12024072805"
    assert client.status().time_sync_ok is True
    assert client.livemeasure().power_kw == 50.0
    assert client.settings() == {"ocmfId": {"IT": 3}}
    assert client.put_settings({"time": {"tz": "+01:00"}}).accepted is False
    put = mocked.calls[-1]
    assert put.json() == {"time": {"tz": "+01:00"}}
    assert put.headers["Content-Type"] == "application/json"


def test_start_and_stop_send_the_documented_requests(client: MeterClient, mocked: PoolMock) -> None:
    stop_url = "/v1/legal?transactionId=tx%201%2F%C3%A4%26x"
    mocked.add("POST", "/v1/legal", status=201, json={**START_BODY, "running": True})
    mocked.add(
        "PUT",
        stop_url,
        json={"transactionId": "tx 1/ä&x", "meterValue": {"transactionStatus": 17}},
    )

    started = client.start_transaction(START_BODY)
    report = client.stop_transaction("tx 1/ä&x")

    assert (started.transaction_id, started.running) == ("tx-1", True)
    assert report.billable
    assert not report.still_running
    start, stop = mocked.calls
    assert (start.method, start.url, start.json()) == ("POST", "/v1/legal", START_BODY)
    assert (stop.method, stop.url, stop.json()) == ("PUT", stop_url, {"running": False})


def test_api_version_switches_legal_ocmf_and_livemeasure_only(
    client: MeterClient, mocked: PoolMock
) -> None:
    client.api_version = "v2"
    mocked.add("GET", "/v2/livemeasure", json=LIVE_BODY)
    mocked.add("GET", "/v2/legal", json={"transactionId": "t", "running": False})
    mocked.add("GET", "/v2/ocmf/7", body=OCMF)
    mocked.add("GET", "/v1/status", json=STATUS_BODY)

    client.livemeasure()
    client.legal()
    assert client.ocmf_by_index(7) == OCMF
    client.status()
    assert [call.url for call in mocked.calls] == [
        "/v2/livemeasure",
        "/v2/legal",
        "/v2/ocmf/7",
        "/v1/status",
    ]


def test_unknown_api_version_is_refused(client: MeterClient) -> None:
    with pytest.raises(ValueError, match="api_version"):
        client.api_version = "v3"


@pytest.mark.parametrize(
    "body",
    [
        OCMF,
        OCMF + "\r\n",
        # Non-ASCII in the payload must come back byte for byte (the meter sends UTF-8).
        OCMF.replace('"FV":"1.0"', '"FV":"1.0","CI":"Zähler|1"'),
    ],
)
def test_ocmf_is_returned_exactly_as_sent(client: MeterClient, mocked: PoolMock, body: str) -> None:
    mocked.add("GET", "/v1/ocmf", body=body.encode("utf-8"), content_type="text/plain")
    assert client.ocmf() == body


@pytest.mark.parametrize("wrapped", [json.dumps(OCMF), json.dumps({"ocmf": OCMF, "meterId": "1"})])
def test_provable_ocmf_wrappers_are_removed(
    client: MeterClient, mocked: PoolMock, wrapped: str
) -> None:
    mocked.add("GET", "/v1/ocmf", body=wrapped)
    assert client.ocmf() == OCMF


def test_certificate_is_repaired_into_pem(client: MeterClient, mocked: PoolMock) -> None:
    pem = make_self_signed().cert_pem
    mocked.add("GET", "/v1/certificate", json={"certificate": line_breakless(pem)})
    assert client.certificate() == pem


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("192.168.10.20", "http://192.168.10.20:80"),
        ("meter-1.charger.local", "http://meter-1.charger.local:80"),
        ("fd00::5", "http://[fd00::5]:80"),
        ("[fd00::5]", "http://[fd00::5]:80"),
    ],
)
def test_ip_address_forms_the_meter_url(host: str, base_url: str, mocked: PoolMock) -> None:
    client = MeterClient.connect(host, 80, timeout_s=1.0)
    mocked.add("GET", "/v1/status", json=STATUS_BODY)
    assert client.status().meter_id == "12024072805"
    assert client._transport.base_url == base_url  # type: ignore[attr-defined]


def test_an_answer_larger_than_any_the_meter_sends_is_not_read_whole(
    client: MeterClient, mocked: PoolMock
) -> None:
    from lem_dcbm.meter.transport import MAX_ANSWER_BYTES

    mocked.add("GET", "/v1/status", body=b"x" * (MAX_ANSWER_BYTES + 10))
    with pytest.raises(MeterBodyError) as caught:
        client.status()
    assert f"larger than {MAX_ANSWER_BYTES} bytes" in str(caught.value)
