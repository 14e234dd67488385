"""The simulated meter's state machine, driven by a manual clock (no sockets)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from lem_dcbm.clock import ManualClock
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner, tamper_record
from lem_dcbm.simulator.refusals import ConditionError, FieldError, NotFound

#: Field order of a published real record (firmware MU-2.3.0.1_SU-0.1.3.0).
REAL_FIELDS = ["FV", "GI", "GS", "GV", "PG", "MV", "MS", "MF", "IS", "IL", "IF", "IT", "ID"]
REAL_FIELDS += ["CT", "CI", "RD"]
REAL_READINGS = [
    ["TM", "TX", "RV", "RI", "RU", "RT", "EF", "ST", "UC"],
    ["RV", "RI", "RU", "ST"],
    ["TM", "TX", "RV", "RI", "RU", "ST"],
    ["RV", "RI", "RU", "ST"],
]
TM_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3}[+-]\d{4} [RU]$")

_SIGNER = OcmfSigner.generate()


def start_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "evseId": "DE*LEM*E1",
        "transactionId": "tx-1",
        "clientId": "tag,tx-1",
        "tariffId": 2,
        "cableId": 1,
        "userData": "",
    }
    body.update(overrides)
    return body


def make(clock: ManualClock, **config: Any) -> SimulatedMeter:
    config.setdefault("min_transaction_seconds", 120.0)
    return SimulatedMeter(clock, _SIGNER, MeterConfig(**config))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc))


@pytest.fixture
def meter(clock: ManualClock) -> SimulatedMeter:
    return make(clock)


def split_record(record: str) -> tuple[str, dict[str, Any]]:
    assert record.startswith("OCMF|")
    payload = record[len("OCMF|") : record.rindex("|")]
    return payload, json.loads(record[record.rindex("|") + 1 :])


def verify(record: str, public_key_hex: str) -> dict[str, Any]:
    """Verify like an outsider: the DER key from status, ECDSA/SHA-256 over the payload."""
    payload, signature = split_record(record)
    assert signature["SA"] == "ECDSA-secp256r1-SHA256"
    key = load_der_public_key(bytes.fromhex(public_key_hex))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(bytes.fromhex(signature["SD"]), payload.encode(), ec.ECDSA(hashes.SHA256()))
    parsed: dict[str, Any] = json.loads(payload)
    return parsed


def run_transaction(meter: SimulatedMeter, clock: ManualClock, tid: str = "tx-1") -> dict[str, Any]:
    meter.start_transaction(start_body(transactionId=tid), "v1")
    clock.advance(120)
    return meter.stop_transaction(tid, {"running": False})


# -- status ---------------------------------------------------------------------------


def test_a_healthy_idle_meter_reads_17_and_21_in_a_transaction(
    meter: SimulatedMeter, clock: ManualClock
) -> None:
    status = meter.status()
    assert status["status"]["value"] == 17
    assert list(status["status"]["bits"])[:3] == [
        "suLinkStatusIsOk",
        "muFatalErrorOccured",
        "transactionIsOnGoing",
    ]
    assert status["errors"]["value"] == 0
    assert status["meterId"] == "12024072805"
    assert status["publicKeyOcmf"].startswith("3059301306072A8648CE3D0201")
    meter.start_transaction(start_body(), "v1")
    assert meter.status()["status"]["value"] == 21


@pytest.mark.parametrize(
    ("status", "errors", "value", "error_value"),
    [
        ({"tamperingIsDetected": True}, {}, 17 | 8, 0),
        ({"suLinkStatusIsOk": False}, {}, 16, 0),
        ({"suMeasureFailureOccurred": True}, {}, 17 | 128, 0),
        ({}, {"logbookIsFull": True}, 17 | 2, 1 << 8),
        ({}, {"muInitIsFailed": True, "suStateIsInvalid": True}, 17 | 2, 3),
    ],
)
def test_status_value_is_computed_from_the_bits(
    meter: SimulatedMeter,
    status: dict[str, bool],
    errors: dict[str, bool],
    value: int,
    error_value: int,
) -> None:
    meter.set_bits(status=status, errors=errors)
    answer = meter.status()
    assert answer["status"]["value"] == value
    assert answer["errors"]["value"] == error_value
    meter.set_bits(status=dict.fromkeys(status), errors=dict.fromkeys(errors))
    assert meter.status()["status"]["value"] == 17


def test_unknown_bit_names_are_refused(meter: SimulatedMeter) -> None:
    with pytest.raises(FieldError) as caught:
        meter.set_bits(status={"noSuchBit": True})
    assert caught.value.field == "noSuchBit"


def test_reversed_voltage_and_over_temperature_come_from_the_load(
    meter: SimulatedMeter,
) -> None:
    meter.set_load(voltage_v=-10.0)
    meter.set_load(voltage_v=400.0)
    assert meter.status()["status"]["bits"]["reversedVoltage"] is True  # latched
    meter.set_load(temperature_c=90.0)
    assert meter.status()["status"]["value"] == 17 | 32 | 64
    meter.set_load(temperature_c=30.0)
    meter.reboot()
    assert meter.status()["status"]["value"] == 17


# -- start limits and preconditions ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("evseId", "E" * 38),
        ("evseId", "é" * 19),  # 19 characters, 38 bytes
        ("transactionId", ""),
        ("transactionId", "t" * 38),
        ("clientId", "c" * 38),
        ("tariffId", 5),
        ("tariffId", -1),
        ("tariffId", True),
        ("cableId", 8),
        ("cableId", "1"),
        ("userData", "u" * 129),
        ("evseId", 7),
    ],
)
def test_each_start_limit_is_refused_naming_the_field(
    meter: SimulatedMeter, field: str, value: object
) -> None:
    with pytest.raises(FieldError) as caught:
        meter.start_transaction(start_body(**{field: value}), "v1")
    assert caught.value.field == field
    assert caught.value.status == 400
    assert caught.value.body["field"] == field
    assert meter.status()["status"]["bits"]["transactionIsOnGoing"] is False


def test_limits_are_inclusive(meter: SimulatedMeter) -> None:
    body = start_body(
        evseId="é" * 18 + "x",
        transactionId="t" * 37,
        clientId="c" * 37,
        tariffId=4,
        cableId=7,
        userData="u" * 128,
    )
    assert meter.start_transaction(body, "v1") == {**body, "running": True}


def test_missing_and_foreign_fields_are_refused(meter: SimulatedMeter) -> None:
    body = start_body()
    del body["userData"]
    with pytest.raises(FieldError, match="userData is missing"):
        meter.start_transaction(body, "v1")
    with pytest.raises(FieldError) as caught:
        meter.start_transaction(start_body(TT="tariff"), "v1")
    assert caught.value.field == "TT"
    with pytest.raises(FieldError) as caught:
        meter.start_transaction(start_body(SC="1"), "v2")
    assert caught.value.field == "SC"


def test_v2_fields_are_echoed_and_kept(meter: SimulatedMeter, clock: ManualClock) -> None:
    body = start_body(TT="0.40 EUR/kWh", UV="1.0", UD="x", SC=3)
    assert meter.start_transaction(body, "v2")["SC"] == 3
    legal = meter.legal()
    assert legal["TT"] == "0.40 EUR/kWh"
    assert legal["SC"] == 3
    payload = verify(meter.ocmf("tx-1"), meter.status()["publicKeyOcmf"])
    assert payload["TT"] == "0.40 EUR/kWh"


@pytest.mark.parametrize(
    ("forced", "condition"),
    [
        ({"suLinkStatusIsOk": False}, "suLinkStatusIsOk"),
        ({"muFatalErrorOccured": True}, "muFatalErrorOccured"),
        ({"transactionIsOnGoing": True}, "transactionIsOnGoing"),
        ({"timeSyncStatusIsOk": False}, "timeSyncStatusIsOk"),
    ],
)
def test_a_blocking_bit_refuses_the_start(
    meter: SimulatedMeter, forced: dict[str, bool], condition: str
) -> None:
    meter.set_bits(status=forced)
    with pytest.raises(ConditionError) as caught:
        meter.start_transaction(start_body(), "v1")
    assert caught.value.condition == condition
    assert caught.value.status == 409
    assert meter.state()["transactions"] == []


def test_indicator_bits_do_not_block(meter: SimulatedMeter) -> None:
    meter.set_bits(status={"tamperingIsDetected": True, "overTemperatureIsDetected": True})
    assert meter.start_transaction(start_body(), "v1")["running"] is True


def test_a_fatal_error_bit_blocks_through_the_fatal_status_bit(meter: SimulatedMeter) -> None:
    meter.set_bits(errors={"memoryAccessIsFailed": True})
    with pytest.raises(ConditionError) as caught:
        meter.start_transaction(start_body(), "v1")
    assert caught.value.condition == "muFatalErrorOccured"


def test_a_second_start_is_refused_while_one_runs(meter: SimulatedMeter) -> None:
    meter.start_transaction(start_body(), "v1")
    with pytest.raises(ConditionError) as caught:
        meter.start_transaction(start_body(transactionId="tx-2"), "v1")
    assert caught.value.condition == "transactionIsOnGoing"


def test_an_unsynced_meter_refuses_until_the_clock_is_set(clock: ManualClock) -> None:
    meter = make(clock, synced=False)
    assert meter.status()["status"]["value"] == 1
    with pytest.raises(ConditionError, match="time synchronisation"):
        meter.start_transaction(start_body(), "v1")
    assert meter.put_settings({"time": {"utc": "2026-07-01T10:00:00Z"}})["result"] == 1
    assert meter.start_transaction(start_body(), "v1")["running"] is True


# -- stop -----------------------------------------------------------------------------


def test_an_early_stop_is_refused_then_allowed(meter: SimulatedMeter, clock: ManualClock) -> None:
    meter.start_transaction(start_body(), "v1")
    clock.advance(119)
    with pytest.raises(ConditionError) as caught:
        meter.stop_transaction("tx-1", {"running": False})
    assert caught.value.condition == "minimumDuration"
    assert "120" in caught.value.message
    clock.advance(1)
    report = meter.stop_transaction("tx-1", {"running": False})
    assert report["meterValue"]["transactionStatus"] == 17
    assert report["meterValue"]["transactionDuration"] == 120
    assert meter.status()["status"]["value"] == 17


def test_stop_requests_that_do_not_fit_are_refused(
    meter: SimulatedMeter, clock: ManualClock
) -> None:
    with pytest.raises(ConditionError, match="no transaction is running"):
        meter.stop_transaction("tx-1", {"running": False})
    meter.start_transaction(start_body(), "v1")
    clock.advance(200)
    with pytest.raises(FieldError) as missing:
        meter.stop_transaction(None, {"running": False})
    assert missing.value.field == "transactionId"
    with pytest.raises(FieldError) as body:
        meter.stop_transaction("tx-1", {"running": True})
    assert body.value.field == "running"
    with pytest.raises(ConditionError) as other:
        meter.stop_transaction("tx-9", {"running": False})
    assert other.value.condition == "transactionId"
    meter.stop_transaction("tx-1", {"running": False})


def test_the_stop_report_has_every_field(meter: SimulatedMeter, clock: ManualClock) -> None:
    meter.set_load(power_kw=60.0)
    report = run_transaction(meter, clock)
    assert list(report) == [
        "paginationCounter",
        "transactionId",
        "evseId",
        "clientId",
        "tariffId",
        "cableSp",
        "userData",
        "meterValue",
        "meterId",
        "signature",
        "publicKey",
    ]
    assert report["cableSp"] == {"cableSpName": "2mR_Comp", "cableSpId": 1, "cableSpRes": 2}
    sample = report["meterValue"]["sampleValue"]
    assert sample["energyUnit"] == "kWh"
    assert sample["energyImport"] == pytest.approx(2.0)
    assert sample["energyImportTotalStop"] - sample["energyImportTotalStart"] == pytest.approx(2.0)
    assert report["meterValue"]["timestampStart"] == "2026-07-01T10:00:00+00:00"
    assert report["meterValue"]["timestampStop"] == "2026-07-01T10:02:00+00:00"
    legal = meter.legal()
    assert legal["running"] is False
    assert legal["transactionId"] == "tx-1"


@pytest.mark.parametrize(
    ("forced", "expected"),
    [
        ({"tamperingIsDetected": True}, 17 | 8),
        ({"suLinkStatusIsOk": False}, 16),
        ({"timeSyncStatusIsOk": False}, 1),
        ({"overTemperatureIsDetected": True}, 17 | 32),
    ],
)
def test_a_problem_during_the_transaction_sticks_in_its_status(
    meter: SimulatedMeter, clock: ManualClock, forced: dict[str, bool], expected: int
) -> None:
    meter.start_transaction(start_body(), "v1")
    meter.set_bits(status=forced)
    meter.set_bits(status=dict.fromkeys(forced))
    clock.advance(120)
    report = meter.stop_transaction("tx-1", {"running": False})
    assert report["meterValue"]["transactionStatus"] == expected
    assert meter.status()["status"]["value"] == 17


# -- energy ---------------------------------------------------------------------------


def test_energy_integrates_the_load_over_time(meter: SimulatedMeter, clock: ManualClock) -> None:
    meter.set_load(power_kw=50.0)
    clock.advance(36)  # 0.5 kWh
    meter.set_load(power_kw=100.0)
    clock.advance(18)  # 0.5 kWh
    live = meter.livemeasure()
    assert live["energyImportTotal"] == pytest.approx(1.0)
    assert live["power"] == 100.0
    assert live["current"] == pytest.approx(250.0)
    meter.set_load(power_kw=-36.0)
    clock.advance(100)
    live = meter.livemeasure()
    assert live["energyExportTotal"] == pytest.approx(1.0)
    assert live["energyImportTotal"] == pytest.approx(1.0)
    assert set(live) == {
        "voltage",
        "current",
        "power",
        "temperatureH",
        "temperatureL",
        "energyImportTotal",
        "energyExportTotal",
        "timestamp",
    }


# -- time -----------------------------------------------------------------------------


def test_time_sync_expires_after_its_validity(clock: ManualClock) -> None:
    meter = make(clock, time_sync_validity_seconds=100.0)
    clock.advance(99)
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is True
    clock.advance(1)
    assert meter.status()["status"]["value"] == 1
    assert meter.put_settings({"time": {"utc": "2026-07-01T10:01:40Z"}})["result"] == 1
    assert meter.status()["status"]["value"] == 17
    clock.advance(100)
    assert meter.status()["status"]["value"] == 1


def test_expiry_during_a_transaction_makes_it_not_billable(clock: ManualClock) -> None:
    meter = make(clock, time_sync_validity_seconds=200.0)
    meter.start_transaction(start_body(), "v1")
    clock.advance(300)
    assert meter.put_settings({"time": {"utc": "2026-07-01T10:05:00Z"}})["result"] == 0
    report = meter.stop_transaction("tx-1", {"running": False})
    assert report["meterValue"]["transactionStatus"] == 1
    payload, _ = split_record(meter.ocmf("tx-1"))
    assert json.loads(payload)["RD"][2]["TM"].endswith(" U")


def test_setting_the_time_switches_ntp_off_and_ntp_counts_as_synced(
    clock: ManualClock,
) -> None:
    meter = make(clock, synced=False, settings_window_seconds=0.0)
    ntp = {"ntp": {"ntpActivated": True, "servers": [{"ipAddress": "10.0.0.1", "port": 123}]}}
    assert meter.put_settings(ntp)["result"] == 1
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is True
    meter.put_settings({"time": {"utc": "2026-07-01T12:00:00Z"}})
    settings = meter.settings()
    assert settings["ntp"]["ntpActivated"] is False
    assert settings["time"]["utc"] == "2026-07-01T12:00:00Z"
    assert meter.status()["time"] == "2026-07-01T12:00:00+00:00"


def test_timezone_dst_and_clock_offset_shape_the_meter_clock(
    meter: SimulatedMeter, clock: ManualClock
) -> None:
    meter.put_settings({"time": {"tz": "+01:00"}})
    assert meter.livemeasure()["timestamp"] == "2026-07-01T11:00:00+01:00"
    meter.put_settings({"time": {"dst": {"activated": True}}})
    assert meter.status()["time"] == "2026-07-01T12:00:00+02:00"
    clock.set_wall(datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc))
    assert meter.status()["time"] == "2026-12-01T11:00:00+01:00"
    meter.set_clock_offset(-365 * 86400)
    assert meter.status()["time"] == "2025-12-01T11:00:00+01:00"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time": {"tz": "+15:00"}}, "time.tz"),
        ({"time": {"tz": "+01:10"}}, "time.tz"),
        ({"time": {"utc": "yesterday"}}, "time.utc"),
        ({"time": {"dst": {"start": {"order": "fifth"}}}}, "time.dst.start"),
        ({"ocmfId": {"IT": 18}}, "ocmfId.IT"),
        ({"http": {"tls_on": "yes"}}, "http.tls_on"),
        ({"ntp": {"ntpActivated": 1}}, "ntp.ntpActivated"),
        ({"colour": "blue"}, "colour"),
        ([], "body"),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(
    meter: SimulatedMeter, body: Any, field: str
) -> None:
    with pytest.raises(FieldError) as caught:
        meter.put_settings(body)
    assert caught.value.field == field
    assert meter.state()["settings_writes"][-1]["accepted"] is False


# -- settings window and reboot -------------------------------------------------------


def test_settings_written_in_the_window_are_lost_at_the_next_reboot(
    clock: ManualClock,
) -> None:
    meter = make(clock, settings_window_seconds=120.0)
    clock.advance(60)
    assert meter.put_settings({"time": {"tz": "+02:00"}})["result"] == 1
    assert meter.settings()["time"]["tz"] == "+02:00"
    clock.advance(60)
    assert meter.put_settings({"ocmfId": {"IT": 3}})["result"] == 1
    writes = meter.state()["settings_writes"]
    assert [(w["accepted"], w["persisted"]) for w in writes] == [(True, False), (True, True)]
    assert writes[0]["since_power_on_s"] == 60
    meter.reboot()
    settings = meter.settings()
    assert settings["time"]["tz"] == "+00:00"
    assert settings["ocmfId"]["IT"] == 3
    # The window restarts with the power cycle.
    assert meter.state()["settings_window_open"] is True
    assert meter.put_settings({"ocmfId": {"IT": 5}})["result"] == 1
    meter.reboot()
    assert meter.settings()["ocmfId"]["IT"] == 3


def test_a_time_sync_in_the_window_does_not_survive_a_reboot(clock: ManualClock) -> None:
    meter = make(clock, synced=False)
    meter.put_settings({"time": {"utc": "2026-07-01T10:00:00Z"}})
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is True
    meter.reboot()
    assert meter.status()["status"]["bits"]["timeSyncStatusIsOk"] is False


def test_settings_writes_are_refused_during_a_transaction(
    meter: SimulatedMeter, clock: ManualClock
) -> None:
    clock.advance(200)
    meter.start_transaction(start_body(), "v1")
    assert meter.put_settings({"time": {"tz": "+01:00"}}) == {
        "meterId": "12024072805",
        "result": 0,
    }
    assert meter.put_settings({"time": {"utc": "2026-07-01T12:00:00Z"}})["result"] == 0
    assert meter.settings()["time"]["tz"] == "+00:00"
    assert meter.state()["settings_writes"][-1]["accepted"] is False


def test_a_running_transaction_survives_a_reboot(meter: SimulatedMeter, clock: ManualClock) -> None:
    meter.set_load(power_kw=30.0)
    meter.start_transaction(start_body(), "v1")
    clock.advance(60)
    meter.reboot()
    assert meter.status()["status"]["bits"]["transactionIsOnGoing"] is True
    clock.advance(60)
    report = meter.stop_transaction("tx-1", {"running": False})
    assert report["meterValue"]["sampleValue"]["energyImport"] == pytest.approx(1.0)
    assert meter.state()["reboots"] == 1


def test_tls_switches_at_once_and_survives_a_reboot_once_persisted(clock: ManualClock) -> None:
    meter = make(clock, settings_window_seconds=0.0)
    assert meter.put_settings({"http": {"tls_on": True}})["result"] == 1
    assert meter.tls_active is True
    meter.reboot()
    assert meter.tls_active is True
    assert meter.put_settings({"http": {"tls_on": False}})["result"] == 1
    assert meter.tls_active is False


def test_tls_switched_in_the_settings_window_is_lost_at_the_reboot(clock: ManualClock) -> None:
    meter = make(clock, settings_window_seconds=120.0)
    meter.put_settings({"http": {"tls_on": True}})
    assert meter.tls_active is True
    meter.reboot()
    assert meter.tls_active is False


def test_tls_cannot_be_switched_during_a_transaction(meter: SimulatedMeter) -> None:
    meter.start_transaction(start_body(), "v1")
    assert meter.put_settings({"http": {"tls_on": True}})["result"] == 0
    assert meter.tls_active is False


# -- OCMF -----------------------------------------------------------------------------


def test_records_look_like_the_real_meters_and_verify(
    meter: SimulatedMeter, clock: ManualClock
) -> None:
    key = meter.status()["publicKeyOcmf"]
    meter.set_load(power_kw=36.0)
    clock.advance(10)
    meter.start_transaction(start_body(), "v1")
    running = verify(meter.ocmf(), key)
    assert list(running) == REAL_FIELDS
    assert [list(r) for r in running["RD"]] == REAL_READINGS[:2]
    clock.advance(200)
    meter.stop_transaction("tx-1", {"running": False})
    done = verify(meter.ocmf("tx-1"), key)
    assert list(done) == REAL_FIELDS
    assert [list(r) for r in done["RD"]] == REAL_READINGS
    assert done["GS"] == done["MS"] == "12024072805"
    assert done["PG"] == "T1"
    assert done["IT"] == "NONE"
    assert done["ID"] == "tag,tx-1"
    assert done["CI"] == "DE*LEM*E1"
    assert done["MF"] == "MU-2.3.0.1_SU-0.1.3.0"
    assert [r.get("TX") for r in done["RD"]] == ["B", None, "E", None]
    assert all(TM_FORMAT.match(r["TM"]) for r in done["RD"] if "TM" in r)
    assert done["RD"][0]["TM"] == "2026-07-01T10:00:10,000+0000 R"
    assert done["RD"][0]["RV"] == pytest.approx(0.1)
    assert done["RD"][2]["RV"] == pytest.approx(2.1)
    assert done["RD"][0]["UC"] == {"UN": "2mR_Comp", "UI": 1, "UR": 2}


def test_the_identification_type_comes_from_the_settings(
    clock: ManualClock,
) -> None:
    meter = make(clock, settings_window_seconds=0.0)
    meter.put_settings({"ocmfId": {"IT": 3}})
    run_transaction(meter, clock)
    payload, _ = split_record(meter.ocmf())
    assert json.loads(payload)["IT"] == "ISO14443"


def test_records_are_found_by_id_index_and_counting_back(
    meter: SimulatedMeter, clock: ManualClock
) -> None:
    with pytest.raises(NotFound):
        meter.ocmf()
    for tid in ("a", "b", "a"):
        run_transaction(meter, clock, tid)
    key = meter.status()["publicKeyOcmf"]
    assert verify(meter.ocmf("a"), key)["PG"] == "T3"
    assert verify(meter.ocmf("b"), key)["PG"] == "T2"
    assert verify(meter.ocmf_at(0), key)["PG"] == "T1"
    assert verify(meter.ocmf_at(-1), key)["PG"] == "T3"
    assert verify(meter.ocmf_at(-3), key)["PG"] == "T1"
    assert verify(meter.ocmf(), key)["PG"] == "T3"
    status = meter.status()
    assert (status["indexOfLastTransaction"], status["numberOfStoredTransactions"]) == (2, 3)
    with pytest.raises(NotFound):
        meter.ocmf("zzz")
    for index in (3, -4):
        with pytest.raises(NotFound):
            meter.ocmf_at(index)


def test_storage_is_a_ring(clock: ManualClock) -> None:
    meter = make(clock, storage_capacity=2)
    for tid in ("a", "b", "c"):
        run_transaction(meter, clock, tid)
    status = meter.status()
    assert (status["indexOfLastTransaction"], status["numberOfStoredTransactions"]) == (0, 2)
    with pytest.raises(NotFound):
        meter.ocmf("a")
    payload, _ = split_record(meter.ocmf_at(0))
    assert json.loads(payload)["PG"] == "T3"


def test_a_tampered_record_no_longer_verifies(meter: SimulatedMeter, clock: ManualClock) -> None:
    meter.set_load(power_kw=50.0)
    run_transaction(meter, clock)
    record = meter.ocmf()
    tampered = tamper_record(record)
    assert tampered != record
    assert len(tampered) == len(record)
    with pytest.raises(InvalidSignature):
        verify(tampered, meter.status()["publicKeyOcmf"])


def test_the_legal_state_of_a_fresh_meter_names_no_transaction(meter: SimulatedMeter) -> None:
    legal = meter.legal()
    assert legal["transactionId"] == ""
    assert legal["running"] is False


def test_the_signing_key_is_kept_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    first = OcmfSigner.load_or_create(path)
    second = OcmfSigner.load_or_create(path)
    assert first.public_key_ocmf == second.public_key_ocmf
    assert OcmfSigner.generate().public_key_ocmf != first.public_key_ocmf
