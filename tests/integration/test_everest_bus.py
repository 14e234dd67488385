"""EverestAdapter against a real mosquitto, driven by a fake consumer and a fake manager.

The handlers here are dummies: this tests the wire protocol, not the meter. Where a
check belongs to the core (the 37-byte limit of a transaction id at the meter), the
adapter's part is only to pass the value through unchanged.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.config import BrokerSettings
from lem_dcbm.core.results import (
    PowermeterValue,
    SignedRecord,
    StartResult,
    StopResult,
    TransactionRequest,
)
from lem_dcbm.everest import envelope
from lem_dcbm.everest.adapter import EverestAdapter
from lem_dcbm.everest.bus import BrokerUnavailable
from lem_dcbm.everest.manager import ManagerError
from lem_dcbm.harness import Broker, free_port, wait_until
from lem_dcbm.records.late_record import KeptRecord
from lem_dcbm.retry import RetryPolicy
from lem_dcbm.simulator.ocmf_signer import OcmfSigner, build_payload, tamper_record
from tests.support.everest_peer import EverestPeer, parameters_from_values
from tests.support.record_samples import CONTENT

pytestmark = pytest.mark.integration

MODULE_ID = "powermeter_1"
FAST = RetryPolicy(attempts=None, first_delay_s=0.1, max_delay_s=0.5, jitter=0.25)
START_OK = {
    "status": "OK",
    "transaction_min_stop_time": "2026-11-22T10:02:00.000Z",
    "transaction_max_stop_time": "2026-11-24T09:59:00.000Z",
}
STOP_OK = {
    "status": "OK",
    "signed_meter_value": {
        "signed_meter_data": "OCMF|{}|{}",
        "signing_method": "",
        "encoding_method": "OCMF",
        "public_key": "3059301306072A8648CE3D0201",
    },
}
MEASUREMENT = PowermeterValue(
    timestamp=datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc),
    meter_id="12024072805",
    energy_import_wh=12.5,
    energy_export_wh=0.0,
    power_w=400.0,
    voltage_v=400.0,
    current_a=1.0,
    temperature_h_c=30.0,
    temperature_l_c=28.0,
)
#: ``MEASUREMENT`` as the ``powermeter`` var, to the byte.
MEASUREMENT_VAR = {
    "timestamp": "2026-11-22T10:00:00.000Z",
    "meter_id": "12024072805",
    "energy_Wh_import": {"total": 12.5},
    "energy_Wh_export": {"total": 0.0},
    "power_W": {"total": 400.0},
    "voltage_V": {"DC": 400.0},
    "current_A": {"DC": 1.0},
    "temperatures": [
        {"temperature": 30.0, "identification": "temperatureH", "location": "temperatureH"},
        {"temperature": 28.0, "identification": "temperatureL", "location": "temperatureL"},
    ],
}
TRANSACTION = {
    "evse_id": "DE*PNX*E1",
    "transaction_id": "tx-1",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": ["RFID_PLAIN"],
}


class DummyHandlers:
    """Records calls; a few transaction ids trigger misbehaviour on purpose."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.release = threading.Event()
        self.release.set()

    def start_transaction(self, request: TransactionRequest) -> StartResult:
        self.calls.append(("start", request))
        return StartResult(
            min_stop_time=datetime(2026, 11, 22, 10, 2, tzinfo=timezone.utc),
            max_stop_time=datetime(2026, 11, 24, 9, 59, tzinfo=timezone.utc),
        )

    def stop_transaction(self, transaction_id: str) -> StopResult:
        self.calls.append(("stop", transaction_id))
        self.release.wait(10)
        if transaction_id == "raise":
            raise RuntimeError("the meter exploded")
        return StopResult(record=SignedRecord("OCMF|{}|{}", "3059301306072A8648CE3D0201"))


def answer_outside_the_interface(adapter: EverestAdapter, transaction_id: str) -> None:
    """Make the stop of ``transaction_id`` answer a result the interface forbids.

    The core's results cannot be shaped wrong, so the dispatcher's handler is replaced: this
    checks that a bug on this side still reaches the caller, flagged.
    """
    commands = adapter._commands
    handler = commands._handlers["stop_transaction"]
    commands.register(
        "stop_transaction",
        lambda args: (
            {"status": "BOGUS_STATUS"}
            if args["transaction_id"] == transaction_id
            else handler(args)
        ),
    )


def broker_of(broker: Broker) -> BrokerSettings:
    return BrokerSettings(host=broker.host, port=broker.port)


@pytest.fixture
def handlers() -> DummyHandlers:
    return DummyHandlers()


@pytest.fixture
def adapter(mosquitto: Broker, handlers: DummyHandlers) -> Iterator[EverestAdapter]:
    adapter = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    adapter.connect(5)
    try:
        yield adapter
    finally:
        adapter.close(2)


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE_ID) as peer:
        yield peer


# --- commands --------------------------------------------------------------------


def test_good_calls_are_answered_with_the_exact_envelope(
    adapter: EverestAdapter, peer: EverestPeer, handlers: DummyHandlers
) -> None:
    call_id = peer.call_async("start_transaction", {"value": TRANSACTION})
    result = peer.result(call_id)
    assert result == {"id": call_id, "origin": MODULE_ID, "retval": START_OK}
    raw = peer.responses("start_transaction")[0].json()
    assert raw == {"msg_type": "CmdResult", "data": {"type": "result", "data": result}}
    assert peer.call("stop_transaction", {"transaction_id": "tx-1"})["retval"] == STOP_OK
    assert handlers.calls == [
        ("start", TransactionRequest("tx-1", evse_id="DE*PNX*E1")),
        ("stop", "tx-1"),
    ]


def _cmd(data: dict[str, Any], msg_type: str = "Cmd") -> bytes:
    return json.dumps({"msg_type": msg_type, "data": data}).encode()


def _stop(call_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": call_id,
        "origin": "evse_manager",
        "args": {"transaction_id": "t"},
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


ID_38 = "x" * 38
BAD_INPUTS: list[tuple[str, str, bytes, str | None]] = [
    ("not JSON", "stop_transaction", b"this is not json", None),
    ("a JSON array", "stop_transaction", b'[{"id": "bad-2"}]', None),
    ("no envelope", "stop_transaction", json.dumps(_stop("bad-3")).encode(), "MessageParsingError"),
    ("missing id", "stop_transaction", _cmd(_stop("bad-4", id=None)), None),
    ("missing origin", "stop_transaction", _cmd(_stop("bad-5", origin=None)), None),
    ("wildcard origin", "stop_transaction", _cmd(_stop("bad-6", origin="#")), None),
    ("missing args", "stop_transaction", _cmd(_stop("bad-7", args=None)), "MessageParsingError"),
    (
        "missing argument",
        "stop_transaction",
        _cmd(_stop("bad-8", args={})),
        "SchemaValidationError",
    ),
    (
        "wrong argument type",
        "stop_transaction",
        _cmd(_stop("bad-9", args={"transaction_id": 42})),
        "SchemaValidationError",
    ),
    (
        "unknown argument",
        "stop_transaction",
        _cmd(_stop("bad-10", args={"transaction_id": "t", "force": True})),
        "SchemaValidationError",
    ),
    (
        "value without evse_id",
        "start_transaction",
        _cmd(
            _stop(
                "bad-11", args={"value": {k: v for k, v in TRANSACTION.items() if k != "evse_id"}}
            )
        ),
        "SchemaValidationError",
    ),
    (
        "identification_status not in the enum",
        "start_transaction",
        _cmd(_stop("bad-12", args={"value": {**TRANSACTION, "identification_status": "MAYBE"}})),
        "SchemaValidationError",
    ),
    (
        "non-UTF-8 bytes inside a routable request",
        "stop_transaction",
        b'{"msg_type":"Cmd","data":{"id":"bad-13","origin":"evse_manager","args":{"transaction_id":"\xff\xfe"}}}',
        "MessageParsingError",
    ),
    ("non-UTF-8 garbage", "stop_transaction", b"\xff\xfe\xfd\x00\x80", None),
    (
        "1 MiB of payload",
        "stop_transaction",
        _cmd(_stop("bad-15", args={"transaction_id": "p" * (1 << 20)})),
        "MessageParsingError",
    ),
    (
        "wrong msg_type",
        "stop_transaction",
        _cmd(_stop("bad-16"), msg_type="Var"),
        "MessageParsingError",
    ),
    (
        "handler raises",
        "stop_transaction",
        _cmd(_stop("bad-17", args={"transaction_id": "raise"})),
        "HandlerException",
    ),
    (
        "handler returns a result outside the interface",
        "stop_transaction",
        _cmd(_stop("bad-18", args={"transaction_id": "bad-result"})),
        "SchemaValidationError",
    ),
]


@pytest.mark.parametrize(
    ("case", "cmd", "payload", "expected"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_answered_or_dropped_and_the_module_goes_on(
    adapter: EverestAdapter,
    peer: EverestPeer,
    caplog: pytest.LogCaptureFixture,
    case: str,
    cmd: str,
    payload: bytes,
    expected: str | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="lem_dcbm.everest")
    answer_outside_the_interface(adapter, "bad-result")
    peer.send_raw(f"cmd/{cmd}", payload)
    # Calls run one at a time in order, so once this one is answered the bad one is done.
    good = peer.call("stop_transaction", {"transaction_id": "after"})
    assert good["retval"] == STOP_OK
    answers = [r.json()["data"]["data"] for r in peer.responses(cmd)]
    bad = [a for a in answers if a["id"].startswith("bad-")]
    if expected is None:
        assert bad == []
        assert any("dropped" in r.getMessage() for r in caplog.records), case
    else:
        assert len(bad) == 1, case
        assert bad[0]["origin"] == MODULE_ID
        assert bad[0]["error"]["__everest__error_type"] == expected
        assert bad[0]["error"]["__everest__error_msg"]
        if "result outside" in case:
            assert bad[0]["retval"] == {"status": "BOGUS_STATUS"}
            assert "BOGUS_STATUS" in bad[0]["error"]["__everest__error_msg"]
        else:
            assert "retval" not in bad[0]


def test_a_38_byte_transaction_id_passes_the_schema_unchanged(
    adapter: EverestAdapter, peer: EverestPeer, handlers: DummyHandlers
) -> None:
    # The interface puts no length on transaction_id; the meter's 37-byte limit on the
    # clientId is applied by the core when it builds the request for the meter.
    assert peer.call("start_transaction", {"value": {**TRANSACTION, "transaction_id": ID_38}})[
        "retval"
    ]
    assert peer.call("stop_transaction", {"transaction_id": ID_38})["retval"] == STOP_OK
    assert handlers.calls[0][1].transaction_id == ID_38
    assert handlers.calls[1] == ("stop", ID_38)


def test_calls_run_one_at_a_time_and_close_finishes_the_one_in_flight(
    mosquitto: Broker, peer: EverestPeer, handlers: DummyHandlers
) -> None:
    adapter = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    adapter.connect(5)
    handlers.release.clear()
    first = peer.call_async("stop_transaction", {"transaction_id": "slow"})
    wait_until(lambda: handlers.calls, 5, what="the first call to start")
    second = peer.call_async("stop_transaction", {"transaction_id": "queued"})
    wait_until(lambda: adapter.commands_waiting == 1, 5, what="the second call to wait")
    closer = threading.Thread(target=adapter.close, args=(5,))
    closer.start()
    handlers.release.set()
    closer.join(10)
    assert peer.result(first)["retval"] == STOP_OK
    refused = peer.result(second)
    assert refused["error"]["__everest__error_type"] == "Shutdown"
    assert handlers.calls == [("stop", "slow")]


def test_a_refused_call_does_not_wait_behind_a_slow_one(
    adapter: EverestAdapter, peer: EverestPeer, handlers: DummyHandlers
) -> None:
    handlers.release.clear()
    slow = peer.call_async("stop_transaction", {"transaction_id": "slow"})
    wait_until(lambda: handlers.calls, 5, what="the slow call to start")
    refused = peer.result(peer.call_async("stop_transaction", {"transaction_id": 17}), 5)
    assert refused["error"]["__everest__error_type"] == "SchemaValidationError"
    assert not handlers.release.is_set()  # answered while the slow call still runs
    handlers.release.set()
    assert peer.result(slow)["retval"] == STOP_OK
    assert handlers.calls == [("stop", "slow")]


# --- variables and errors -------------------------------------------------------------


def test_variables(adapter: EverestAdapter, peer: EverestPeer) -> None:
    assert adapter.publish_powermeter(MEASUREMENT)
    assert adapter.publish_public_key_ocmf("3059301306072A")
    assert peer.wait_for_var("powermeter")[0].value == MEASUREMENT_VAR
    assert peer.wait_for_var("public_key_ocmf")[0].value == "3059301306072A"
    raw = peer.on_topic(f"everest/modules/{MODULE_ID}/impl/main/var/powermeter")[0].json()
    assert raw == {"msg_type": "Var", "data": {"data": MEASUREMENT_VAR}}
    # A value that breaks the interface (no timestamp) is not published.
    assert not adapter._publish_var("powermeter", {"energy_Wh_import": {"total": 1}})


@pytest.mark.parametrize("namespace", ["powermeter", "generic"])
def test_errors_raise_once_and_clear_once(
    mosquitto: Broker, peer: EverestPeer, handlers: DummyHandlers, namespace: str
) -> None:
    adapter = EverestAdapter(
        broker_of(mosquitto), MODULE_ID, handlers, error_namespace=namespace, backoff=FAST
    )
    adapter.connect(5)
    try:
        adapter.clear_error("CommunicationFault", "")  # not raised: nothing is sent
        adapter.raise_error("CommunicationFault", "", "the meter does not answer")
        adapter.raise_error("CommunicationFault", "", "the meter does not answer")
        adapter.raise_error("VendorWarning", "TemperatureWarning", "hot", severity="Medium")
        adapter.clear_error("CommunicationFault", "")
        adapter.clear_error("CommunicationFault", "")
        peer.wait_for(lambda: len(peer.errors_raised) == 2 and peer.errors_cleared, what="errors")
    finally:
        adapter.close(2)
    raised, warning = peer.errors_raised
    (cleared,) = peer.errors_cleared
    topic = f"everest/modules/{MODULE_ID}/impl/main/error/{namespace}/CommunicationFault"
    assert [m.json()["msg_type"] for m in peer.on_topic(topic)] == ["RaiseError", "ClearError"]
    assert raised["type"] == f"{namespace}/CommunicationFault"
    assert raised["origin"] == {"module_id": MODULE_ID, "implementation_id": "main"}
    assert (raised["severity"], raised["state"], raised["sub_type"]) == ("High", "Active", "")
    assert raised["message"] == "the meter does not answer"
    assert raised["vendor_id"] == ""
    assert raised["timestamp"].endswith("Z")
    assert cleared == {**raised, "state": "ClearedByModule"}
    assert (warning["type"], warning["sub_type"]) == (
        f"{namespace}/VendorWarning",
        "TemperatureWarning",
    )
    assert warning["severity"] == "Medium"


# --- the manager -------------------------------------------------------------------


PARAMETERS = parameters_from_values({"ip_address": "192.168.10.20", "port": 8080, "tariff_id": 3})


@pytest.mark.parametrize(
    ("generation", "request_type", "response_type"),
    [
        ("2026", "ConfigurationRequest", "ConfigurationResponse"),
        ("0.25", "GetConfig", "GetConfigResponse"),
    ],
)
def test_manager_handshake(
    mosquitto: Broker,
    peer: EverestPeer,
    handlers: DummyHandlers,
    generation: str,
    request_type: str,
    response_type: str,
) -> None:
    peer.act_as_manager(generation, PARAMETERS)
    adapter = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    adapter.connect(5)
    try:
        assert adapter.fetch_manager_config(5) == PARAMETERS
        assert [r["msg_type"] for r in peer.config_requests] == [request_type]
        assert peer.config_requests[0]["data"] == {
            "type": "Get",
            "origin": MODULE_ID,
            "request": {"type": "Module"},
        }
        adapter.announce_ready()
        peer.wait_for(lambda: peer.metadata and peer.module_ready, what="metadata and ready")
        assert peer.metadata == [
            {
                "msg_type": response_type,
                "data": {
                    "module": peer.module_name,  # the name the manager gave
                    "provides": {"main": {"interface": "powermeter"}},
                },
            }
        ]
        assert peer.module_ready == [{"msg_type": "ModuleReady", "data": True}]
        assert peer.foreign_messages == []

        stop = threading.Event()
        outcome: list[bool] = []
        waiter = threading.Thread(target=lambda: outcome.append(adapter.wait_global_ready(stop)))
        waiter.start()
        peer.clear_retained()
        peer.send_global_ready()
        waiter.join(5)
        assert outcome == [True]
        peer.send_global_ready()  # a repeated global ready changes nothing
        assert adapter.wait_global_ready(stop)
        assert not adapter.shutdown_requested.is_set()
        peer.send_shutdown()
        assert adapter.shutdown_requested.wait(5)
    finally:
        adapter.close(2)


@pytest.mark.parametrize(
    ("manager", "asked_for", "request_type"),
    [("2026", "auto", "ConfigurationRequest"), ("0.25", "0.25", "GetConfig")],
    ids=["no retained settings: 2026 names", "a named generation"],
)
def test_generation_without_retained_settings(
    mosquitto: Broker,
    peer: EverestPeer,
    handlers: DummyHandlers,
    manager: str,
    asked_for: str,
    request_type: str,
) -> None:
    peer.act_as_manager(manager, PARAMETERS, publish_settings=False)
    adapter = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    adapter.connect(5)
    try:
        assert adapter.fetch_manager_config(5, generation=asked_for) == PARAMETERS
        assert [r["msg_type"] for r in peer.config_requests] == [request_type]
        assert peer.foreign_messages == []
    finally:
        adapter.close(2)


def test_a_silent_manager_is_a_clear_error(
    mosquitto: Broker, peer: EverestPeer, handlers: DummyHandlers
) -> None:
    adapter = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    adapter.connect(5)
    try:
        with pytest.raises(ManagerError, match="no configuration within 1 s"):
            adapter.fetch_manager_config(1)
    finally:
        adapter.close(2)
    requests = peer.wait_for(lambda: peer.on_topic("everest/config/request"), what="the request")
    assert {json.loads(r.payload)["msg_type"] for r in requests} == {"ConfigurationRequest"}


# --- the connection ------------------------------------------------------------------


def test_no_broker_is_a_clear_error(handlers: DummyHandlers) -> None:
    adapter = EverestAdapter(
        BrokerSettings(host="127.0.0.1", port=free_port()), MODULE_ID, handlers, backoff=FAST
    )
    before = threading.active_count()
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:\d+ within 0.5 s"):
        adapter.connect(0.5)
    wait_until(lambda: threading.active_count() <= before, 5, what="the threads to end")


def test_reconnect_after_broker_restart(mosquitto: Broker, handlers: DummyHandlers) -> None:
    adapter = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    connects: list[int] = []
    adapter.on_connected(lambda: connects.append(1))
    adapter.connect(5)
    try:
        wait_until(lambda: len(connects) == 1, 5, what="the first on_connected")
        mosquitto.stop()
        wait_until(lambda: not adapter.connected, 5, what="the module to notice")
        assert not adapter.publish_powermeter(MEASUREMENT)  # dropped, not queued
        mosquitto.start()
        wait_until(lambda: len(connects) == 2, 10, what="on_connected after the restart")
        # The restarted broker forgot every session: answering proves the resubscription.
        with EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE_ID) as peer:
            assert peer.call("stop_transaction", {"transaction_id": "tx"}, 10)["retval"] == STOP_OK
            assert adapter.publish_powermeter(MEASUREMENT)
            assert len(peer.wait_for_var("powermeter")) == 1
    finally:
        adapter.close(2)


def test_a_start_sent_while_the_module_was_not_running_is_refused_a_stop_is_run(
    mosquitto: Broker, peer: EverestPeer, handlers: DummyHandlers
) -> None:
    """How long such a call waited is unknown: a start is answered, never run late.

    A stop is carried out all the same: it ends only the transaction it names, and its
    record must reach the bill. (Calls kept across a short cut: test_stale_calls.)
    """
    first = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    first.connect(5)
    first.close(2)
    start_id = peer.call_async("start_transaction", {"value": TRANSACTION})
    stop_id = peer.call_async("stop_transaction", {"transaction_id": "while-away"})
    # Same module id, same client id: the broker kept the session and the calls.
    second = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
    second.connect(5)
    try:
        result = peer.result(start_id)
        assert result["error"]["__everest__error_type"] == "CmdTimeout", result
        assert "since before this module started" in result["error"]["__everest__error_msg"]
        assert peer.result(stop_id)["retval"] == STOP_OK
        assert [name for name, _ in handlers.calls] == ["stop"]
        # A call made now runs.
        assert peer.call("stop_transaction", {"transaction_id": "now"})["retval"] == STOP_OK
    finally:
        second.close(2)


def test_unix_socket_broker(handlers: DummyHandlers) -> None:
    # A short directory: unix socket paths are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(dir="/tmp") as workdir:
        socket_path = Path(workdir) / "mqtt.sock"
        with Broker(Path(workdir), socket_path=socket_path) as broker:
            adapter = EverestAdapter(
                BrokerSettings(socket_path=str(socket_path)), MODULE_ID, handlers, backoff=FAST
            )
            adapter.connect(5)
            try:
                with EverestPeer("127.0.0.1", broker.port, module_id=MODULE_ID) as peer:
                    assert (
                        peer.call("stop_transaction", {"transaction_id": "u"})["retval"] == STOP_OK
                    )
            finally:
                adapter.close(2)


def test_retained_commands_are_never_executed(
    mosquitto: Broker, handlers: DummyHandlers, peer: EverestPeer
) -> None:
    """A retained stop("") on the command topic would end the session at every reconnect."""
    stop_topic = peer.cmd_topic("stop_transaction")
    retained = envelope.cmd_payload("retained-1", {"transaction_id": ""}, "evse_manager")
    peer.send_raw(stop_topic, retained, retain=True)
    for _ in range(2):  # the first connect, then a reconnect: each gets the retained message
        adapter = EverestAdapter(broker_of(mosquitto), MODULE_ID, handlers, backoff=FAST)
        adapter.connect(5)
        try:
            # A real call after it is answered, so the retained one was seen and passed over.
            answer = peer.call("stop_transaction", {"transaction_id": "tx-real"}, 10)
            assert answer["retval"] == STOP_OK
        finally:
            adapter.close(2)
    assert handlers.calls == [("stop", "tx-real"), ("stop", "tx-real")]
    assert not [m for m in peer.responses("stop_transaction") if b"retained-1" in m.payload]
    peer.send_raw(stop_topic, b"", retain=True)  # clear the retained message


# --- late records ----------------------------------------------------------------


def test_the_late_road_verifies_a_record_when_it_publishes_it(
    adapter: EverestAdapter, peer: EverestPeer
) -> None:
    signer = OcmfSigner.generate()
    record = signer.record(build_payload(CONTENT))
    # What a journal holds after somebody edited its record: the old verdict says valid.
    stored = KeptRecord(
        transaction_id="tx-late",
        meter_id=CONTENT.meter_id,
        ocmf=tamper_record(record),
        public_key_ocmf=signer.public_key_ocmf,
        signature_valid=True,
        failed_checks=(),
        started_at=None,
        stopped_at=None,
        fetched_at="2026-11-22T10:30:04.250Z",
    )
    topic = adapter.late_record_topic("tx-late")
    peer.subscribe(topic)

    assert adapter.publish_late_record(stored, "2026-11-22T10:31:00.000Z")

    received = peer.wait_for(lambda: peer.on_topic(topic), what="the late record")[0]
    verification = received.json()["verification"]
    assert verification["signature_valid"] is False
    assert [failure["check"] for failure in verification["failed_checks"]] == ["signature"]
