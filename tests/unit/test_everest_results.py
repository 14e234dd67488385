"""The core's results as EVerest answers, valid against the interface's result schemas."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from lem_dcbm.core.results import SignedRecord, StartResult, StopResult
from lem_dcbm.everest import validation
from lem_dcbm.everest.results import failed, start_response, stop_response

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
RECORD = SignedRecord('OCMF|{"FV":"1.0"}|{"SD":"00"}', "3059AB")


def test_a_started_transaction_answers_its_stop_window_and_begin_record() -> None:
    result = StartResult(
        min_stop_time=NOW + timedelta(minutes=2),
        max_stop_time=NOW + timedelta(hours=48) - timedelta(minutes=1),
        begin_record=RECORD,
    )
    answer = start_response(result)
    assert answer == {
        "status": "OK",
        "transaction_min_stop_time": "2026-11-22T10:02:00.000Z",
        "transaction_max_stop_time": "2026-11-24T09:59:00.000Z",
        "signed_meter_value": {
            "signed_meter_data": RECORD.ocmf,
            "signing_method": "",
            "encoding_method": "OCMF",
            "public_key": "3059AB",
        },
    }
    assert validation.check_result("start_transaction", answer) is None
    without = start_response(StartResult(min_stop_time=NOW, max_stop_time=NOW))
    assert "signed_meter_value" not in without
    assert validation.check_result("start_transaction", without) is None


def test_failures_answer_unexpected_error_with_the_reason() -> None:
    assert start_response(StartResult(error="meter refused")) == failed("meter refused")
    assert stop_response(StopResult(error="no transaction running")) == {
        "status": "UNEXPECTED_ERROR",
        "error": "no transaction running",
    }
    # A result that claims success without its content is not passed off as OK.
    assert start_response(StartResult())["status"] == "UNEXPECTED_ERROR"
    assert stop_response(StopResult())["status"] == "UNEXPECTED_ERROR"
    assert validation.check_result("stop_transaction", stop_response(StopResult(error="x"))) is None


def test_a_stop_answers_its_record() -> None:
    answer = stop_response(StopResult(record=RECORD))
    assert answer["status"] == "OK"
    assert answer["signed_meter_value"]["signed_meter_data"] == RECORD.ocmf
    assert validation.check_result("stop_transaction", answer) is None
