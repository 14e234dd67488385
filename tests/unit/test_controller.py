"""The controller's transaction logic against an in-memory meter."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock, rfc3339
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.results import StopResult
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.errors import MeterConnectionError, MeterStatusError
from lem_dcbm.everest.shapes import powermeter_var, transaction_request
from tests.support.fake_meter import PUBLIC_KEY, FakeMeter, unreachable

REQUEST: dict[str, Any] = {
    "evse_id": "DE*PNX*E1",
    "transaction_id": "tx-1",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": ["RFID_PLAIN"],
    "identification_data": "04A1B2C3",
}


def make(meter: FakeMeter, **overrides: Any) -> tuple[MeterController, ManualClock]:
    clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    timesync = TimeSync(meter, clock, timezone="+01:00", dst={"activated": False})
    settings = ControllerSettings(
        start=StartSettings(tariff_id=2, cable_id=1, uv="1.0", ud="ud", sc=3), **overrides
    )
    controller = MeterController(meter, settings, clock, timesync)
    return controller, clock


@pytest.fixture
def meter() -> FakeMeter:
    return FakeMeter()


def test_initialize_reads_identity_and_probes_api(meter: FakeMeter) -> None:
    meter.v2 = True
    controller, _ = make(meter)
    info = controller.initialize()
    assert info.meter_id == "12024072805"
    assert info.public_key_ocmf == PUBLIC_KEY
    assert info.api_version == "v2"
    assert meter.api_version == "v2"


def test_initialize_forced_api_does_not_probe(meter: FakeMeter) -> None:
    meter.v2 = True
    controller, _ = make(meter, api_version="v1")
    assert controller.initialize().api_version == "v1"
    assert "supports_v2" not in meter.calls


def test_initialize_survives_failing_optional_requests(meter: FakeMeter) -> None:
    meter.fail["legal"] = [unreachable("legal")]
    meter.fail["put_settings"] = [unreachable("settings")]
    controller, _ = make(meter)
    assert controller.initialize().meter_id == "12024072805"
    assert powermeter_var(controller.read_powermeter())["energy_Wh_import"] == {"total": 12500.0}


def test_initialize_fails_without_status(meter: FakeMeter) -> None:
    meter.fail["status"] = [unreachable("status")]
    controller, _ = make(meter)
    with pytest.raises(MeterConnectionError):
        controller.initialize()


def test_start_then_stop_returns_final_record(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    started = controller.start_transaction(transaction_request(REQUEST))
    assert started.ok
    # The window the EVerest answer carries (as RFC 3339 text, see test_everest_results).
    assert rfc3339(started.min_stop_time) == "2026-11-22T10:02:00.000Z"  # type: ignore[arg-type]
    assert rfc3339(started.max_stop_time) == "2026-11-24T09:59:00.000Z"  # type: ignore[arg-type]
    assert started.begin_record is not None
    assert '"TX":"B"' in started.begin_record.ocmf
    assert meter.last_start_body["clientId"] == "04A1B2C3,tx-1"
    stopped = controller.stop_transaction("tx-1")
    assert stopped.ok
    assert stopped.record is not None
    assert stopped.record.public_key_ocmf == PUBLIC_KEY
    assert '"TX":"E"' in stopped.record.ocmf


def test_v2_start_body_has_v2_fields(meter: FakeMeter) -> None:
    meter.v2 = True
    controller, _ = make(meter)
    controller.initialize()
    controller.start_transaction(transaction_request({**REQUEST, "tariff_text": "0.49 EUR/kWh"}))
    body = meter.last_start_body
    assert (body["TT"], body["UV"], body["UD"], body["SC"]) == ("0.49 EUR/kWh", "1.0", "ud", 3)


def test_stop_twice_returns_same_record(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    controller.start_transaction(transaction_request(REQUEST))
    first = controller.stop_transaction("tx-1")
    meter.fail["status"] = [unreachable("status")]
    second = controller.stop_transaction("tx-1")
    assert second == first


def test_stop_of_transaction_stopped_before_restart_fetches_record(meter: FakeMeter) -> None:
    meter.last_id = "tx-old"
    meter.ended.add("tx-old")
    controller, _ = make(meter)
    controller.initialize()
    answer = controller.stop_transaction("tx-old")
    assert answer.ok
    assert "stop_transaction" not in meter.calls


def test_empty_stop_without_running_transaction(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    assert controller.stop_transaction("") == StopResult(error="no transaction running")


def test_empty_stop_stops_dangling_transaction_of_this_module(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    controller.start_transaction(transaction_request({**REQUEST, "transaction_id": "tx-dangling"}))
    answer = controller.stop_transaction("")
    assert answer.ok
    assert meter.running_id is None
    assert "tx-dangling" in answer.record.ocmf


def test_empty_stop_leaves_a_transaction_this_module_does_not_hold(meter: FakeMeter) -> None:
    meter.running_id = "tx-dangling"
    controller, _ = make(meter)
    controller.initialize()
    answer = controller.stop_transaction("")
    assert not answer.ok
    assert "transaction tx-dangling (evseId '', clientId ',tx-dangling')" in answer.error
    assert meter.running_id == "tx-dangling"


def test_start_stops_dangling_transaction_first_and_keeps_its_record(meter: FakeMeter) -> None:
    # Started for this EVSE by this module, whose journal is gone: provably this EVSE's.
    meter.running_id = "tx-dangling"
    meter.bodies["tx-dangling"] = {"evseId": REQUEST["evse_id"], "clientId": "04A1,tx-dangling"}
    controller, _ = make(meter)
    controller.initialize()
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    assert meter.running_id == "tx-1"
    meter.fail["ocmf"] = [unreachable("ocmf")] * 10
    kept = controller.stop_transaction("tx-dangling")
    assert kept.ok


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"transaction_id": ""}, "transaction_id must not be empty"),
        ({"transaction_id": "x" * 38}, "transaction_id is 38 bytes"),
        ({"transaction_id": "ü" * 19}, "transaction_id is 38 bytes"),
        ({"evse_id": "E" * 38}, "evse_id is 38 bytes"),
    ],
)
def test_start_limits_checked_before_sending(
    meter: FakeMeter, change: dict[str, str], reason: str
) -> None:
    controller, _ = make(meter)
    controller.initialize()
    answer = controller.start_transaction(transaction_request({**REQUEST, **change}))
    assert not answer.ok
    assert reason in answer.error
    assert "start_transaction" not in meter.calls


def test_client_id_cut_at_character_boundary(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    controller.start_transaction(transaction_request({**REQUEST, "identification_data": "€" * 20}))
    client_id = meter.last_start_body["clientId"]
    assert len(client_id.encode()) <= 37
    assert client_id == "€" * 12


def test_start_retries_connection_errors_and_detects_lost_answer(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()

    def lost_answer() -> None:
        # The meter starts the transaction but the answer is lost on the way back.
        meter.running_id = "tx-1"
        raise MeterConnectionError("POST", "/v1/legal", "read timed out")

    meter.fail["start_transaction"] = [lost_answer]
    answer = controller.start_transaction(transaction_request(REQUEST))
    assert answer.ok
    # The meter was asked what happened instead of being sent the start again.
    assert meter.calls.count("start_transaction") == 1


def test_start_sent_again_when_the_meter_did_not_act(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    meter.fail["start_transaction"] = [MeterConnectionError("POST", "/v1/legal", "reset")]
    assert controller.start_transaction(transaction_request(REQUEST)).ok
    assert meter.calls.count("start_transaction") == 2
    assert meter.running_id == "tx-1"


def test_start_reports_meter_refusal(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    meter.fail["start_transaction"] = [
        MeterStatusError("POST", "/v1/legal", 400, '{"error": "evseId too long"}')
    ]
    answer = controller.start_transaction(transaction_request(REQUEST))
    assert not answer.ok
    assert "400" in answer.error
    assert "evseId too long" in answer.error


def test_start_refused_by_the_meter_is_explained_by_its_status_bits(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    meter.sensor_link_ok = False
    answer = controller.start_transaction(transaction_request(REQUEST))
    assert not answer.ok
    assert "400" in answer.error
    assert "suLinkStatusIsOk false" in answer.error
    # The bits only explain: the meter was asked and refused.
    assert "start_transaction" in meter.calls


def test_start_goes_on_when_timezone_write_fails_but_sync_valid(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    meter.refuse_settings.add("time.tz")
    assert controller.start_transaction(transaction_request(REQUEST)).ok


def test_start_fails_when_time_sync_invalid_and_unfixable(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    meter.time_sync_ok = False
    meter.refuse_settings.add("time.utc")
    answer = controller.start_transaction(transaction_request(REQUEST))
    assert not answer.ok
    assert "time sync is invalid" in answer.error


def test_stop_unreachable_meter_answers_error(meter: FakeMeter) -> None:
    controller, _ = make(meter, transaction_retries=1)
    controller.initialize()
    controller.start_transaction(transaction_request(REQUEST))
    meter.fail["status"] = [unreachable("status")] * 2
    answer = controller.stop_transaction("tx-1")
    assert not answer.ok
    assert "connection refused" in answer.error
    assert controller.stop_transaction("tx-1").ok


def test_stop_ocmf_failure_then_second_stop_returns_record(meter: FakeMeter) -> None:
    controller, clock = make(meter, transaction_retries=1, stop_record_wait_s=5.0)
    controller.initialize()
    controller.start_transaction(transaction_request(REQUEST))
    meter.fail["ocmf"] = [MeterStatusError("GET", "/v1/ocmf", 500, "boom")] * 100
    started = clock.monotonic()
    first = controller.stop_transaction("tx-1")
    assert clock.monotonic() - started <= 5.0
    meter.fail["ocmf"] = []
    assert not first.ok
    assert "stopped at the meter" in first.error
    assert meter.running_id is None
    second = controller.stop_transaction("tx-1")
    assert second.ok
    assert '"TX":"E"' in second.record.ocmf


def test_commands_before_init_answer_error(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    assert "not initialised" in controller.start_transaction(transaction_request(REQUEST)).error
    assert "not initialised" in controller.stop_transaction("tx-1").error


def test_powermeter_units(meter: FakeMeter) -> None:
    controller, _ = make(meter)
    controller.initialize()
    value = powermeter_var(controller.read_powermeter())
    assert value["timestamp"] == "2026-11-22T09:00:00.000Z"
    assert value["power_W"] == {"total": 4000.0}
    assert value["energy_Wh_export"] == {"total": 250.0}
    assert value["voltage_V"] == {"DC": 400.0}
    assert value["current_A"] == {"DC": 10.0}
    assert [t["location"] for t in value["temperatures"]] == ["temperatureH", "temperatureL"]


def test_measurement_read_uses_the_short_timeout(meter: FakeMeter) -> None:
    controller, _ = make(meter, measurement_timeout_s=1.5)
    controller.initialize()
    controller.read_powermeter()
    assert meter.livemeasure_timeouts == [1.5]


@pytest.mark.parametrize(
    ("firmware", "api"),
    [("MU-2.3.0.1_SU-0.1.3.0", "v2"), ("MU-0.1.4.0", "v1"), ("MU-10.0.0.0", "v2"), ("", "v1")],
)
def test_api_version_guessed_from_firmware_when_the_probe_is_inconclusive(
    meter: FakeMeter, firmware: str, api: str
) -> None:
    meter.firmware = firmware
    meter.fail["supports_v2"] = [MeterStatusError("GET", "/v2/livemeasure", 503, "busy")]
    controller, _ = make(meter)
    assert controller.initialize().api_version == api
