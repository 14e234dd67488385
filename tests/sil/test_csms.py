"""The tier's CSMS against a charging station played by the ``ocpp`` package itself.

No EVerest build is needed: these run wherever the test extras are installed, so the CSMS
that judges the simulated charger is itself checked (about a second).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201

from lem_dcbm.records.checks import RecordExpectation
from tests.sil.csms import Csms, ocmf_text, record_kind
from tests.support.fake_meter import PUBLIC_KEY, ocmf_record

METER_ID = "12024072805"
START = ocmf_record("tx-1", ended=False)
STOP = ocmf_record("tx-1", ended=True)


@pytest.fixture
def csms() -> Iterator[Csms]:
    with Csms(meter_key=PUBLIC_KEY, expectation=RecordExpectation(meter_id=METER_ID)) as server:
        yield server


def _signed(record: str, context: str, *, encode: bool = False) -> dict[str, Any]:
    data = base64.b64encode(record.encode()).decode() if encode else record
    return {
        "value": 0.0,
        "context": context,
        "measurand": "Energy.Active.Import.Register",
        "signedMeterValue": {
            "signedMeterData": data,
            "signingMethod": "",
            "encodingMethod": "OCMF",
            "publicKey": "",
        },
    }


async def _station(
    kind: type[ChargePoint201] | type[ChargePoint16], url: str, messages: list[Any]
) -> list[Any]:
    """Connect as a station of ``kind``, send ``messages`` in turn, return the answers."""
    protocol = "ocpp1.6" if kind is ChargePoint16 else "ocpp2.0.1"
    async with websockets.connect(f"{url}/cp001", subprotocols=[protocol]) as ws:
        station = kind("cp001", ws)
        listener = asyncio.create_task(station.start())
        answers = [await station.call(message) for message in messages]
        listener.cancel()
        return answers


def _event(kind: str, seq: int, values: list[dict[str, Any]]) -> Any:
    return call201.TransactionEvent(
        event_type=kind,
        timestamp="2026-12-05T08:00:00Z",
        trigger_reason="EVDeparted" if kind == "Ended" else "Authorized",
        seq_no=seq,
        transaction_info={"transaction_id": "tx-1"},
        meter_value=[{"timestamp": "2026-12-05T08:00:00Z", "sampled_value": values}]
        if values
        else None,
        id_token={"id_token": "DEADBEEF", "type": "ISO14443"} if kind == "Started" else None,
    )


def test_ocpp201_session_records_are_kept_and_verified(csms: Csms) -> None:
    boot = call201.BootNotification(
        charging_station={"model": "m", "vendor_name": "v"}, reason="PowerUp"
    )
    started = _event("Started", 0, [_signed(START, "Transaction.Begin")])
    ended = _event(
        "Ended",
        1,
        [_signed(START, "Transaction.Begin"), _signed(STOP, "Transaction.End", encode=True)],
    )
    answers = asyncio.run(_station(ChargePoint201, csms.url, [boot, started, ended]))

    assert answers[0].status == "Accepted"
    assert answers[1].id_token_info == {"status": "Accepted"}
    values = csms.signed_values()
    assert [(v.event, v.context, v.kind, v.encoding) for v in values] == [
        ("Started", "Transaction.Begin", "begin", "plain"),
        ("Ended", "Transaction.Begin", "begin", "plain"),
        ("Ended", "Transaction.End", "whole", "base64"),
    ]
    assert all(v.verified for v in values), csms.summary()
    assert values[2].record == STOP
    assert [e["eventType"] for e in csms.transaction_events()] == ["Started", "Ended"]


def test_ocpp201_foreign_tampered_and_misplaced_records_fail(csms: Csms) -> None:
    foreign = ocmf_record("tx-1", ended=True, meter_id="99999999999")
    tampered = STOP.replace('"RV":2.0', '"RV":3.0')
    assert tampered != STOP
    values = [
        _signed(foreign, "Transaction.End"),
        _signed(tampered, "Transaction.End"),
        _signed(START, "Transaction.End"),
    ]
    asyncio.run(_station(ChargePoint201, csms.url, [_event("Ended", 0, values)]))

    found = csms.signed_values()
    assert [v.verified for v in found] == [False, False, False]
    assert any(f.startswith("meter:") for f in found[0].failures), found[0]
    assert found[1].signature_valid is False
    assert found[2].failures == ("context: a begin record under Transaction.End",)


def test_ocpp16_signed_data_in_meter_values_and_stop(csms: Csms) -> None:
    sampled_begin = {"value": START, "context": "Transaction.Begin", "format": "SignedData"}
    sampled_end = {"value": STOP, "context": "Transaction.End", "format": "SignedData"}
    messages = [
        call16.BootNotification(charge_point_model="m", charge_point_vendor="v"),
        call16.StartTransaction(
            connector_id=1, id_tag="DEADBEEF", meter_start=0, timestamp="2026-12-05T08:00:00Z"
        ),
        call16.MeterValues(
            connector_id=1,
            transaction_id=1,
            meter_value=[{"timestamp": "2026-12-05T08:00:00Z", "sampled_value": [sampled_begin]}],
        ),
        call16.StopTransaction(
            meter_stop=0,
            timestamp="2026-12-05T08:01:00Z",
            transaction_id=1,
            transaction_data=[
                {"timestamp": "2026-12-05T08:01:00Z", "sampled_value": [sampled_begin, sampled_end]}
            ],
        ),
    ]
    answers = asyncio.run(_station(ChargePoint16, csms.url, messages))

    assert answers[1].transaction_id == 1
    found = csms.signed_values()
    assert [(v.ocpp, v.action, v.context, v.transaction_id) for v in found] == [
        ("1.6", "MeterValues", "Transaction.Begin", "1"),
        ("1.6", "StopTransaction", "Transaction.Begin", "1"),
        ("1.6", "StopTransaction", "Transaction.End", "1"),
    ]
    assert all(v.verified for v in found), csms.summary()


def test_record_decoding() -> None:
    assert ocmf_text(STOP) == (STOP, "plain")
    assert ocmf_text(base64.b64encode(STOP.encode()).decode()) == (STOP, "base64")
    assert ocmf_text("not a record") == ("not a record", "unknown")
    assert record_kind(START) == "begin"
    assert record_kind(STOP) == "whole"
    assert record_kind("OCMF|{}") == "unreadable"


def test_ocpp201_idle_meter_values_carry_a_record_that_is_verified(csms: Csms) -> None:
    """libocpp's clock-aligned MeterValues of an idle EVSE: how a short session's record comes."""
    aligned = call201.MeterValues(
        evse_id=1,
        meter_value=[
            {"timestamp": "2026-12-05T08:15:00Z", "sampled_value": [_signed(STOP, "Sample.Clock")]}
        ],
    )
    asyncio.run(_station(ChargePoint201, csms.url, [aligned]))

    [value] = csms.signed_values()
    assert (value.ocpp, value.action, value.context, value.kind) == (
        "2.0.1",
        "MeterValues",
        "Sample.Clock",
        "whole",
    )
    assert value.verified, csms.summary()
    assert value.record == STOP
