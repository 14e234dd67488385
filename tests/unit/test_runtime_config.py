"""Configuration changed while the module runs: validated as at start-up, applied at once."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.config import ModuleConfig, config_from_mapping, load_manifest, runtime_keys
from lem_dcbm.core.controller import MeterController
from lem_dcbm.core.powermeter import powermeter_value
from lem_dcbm.core.temperature_monitor import TemperatureMonitor
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.meter.models import LiveMeasure
from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.runtime_config import (
    CONNECTION_KEYS,
    ChangeAnswer,
    RunningParts,
    RuntimeConfig,
    clock_settings,
    controller_settings,
    temperature_limits,
)
from tests.support.fake_meter import FakeMeter
from tests.support.fake_outputs import RecordingOutputs
from tests.unit.test_controller import REQUEST

#: The keys documented in docs/runtime-config.md as changeable while running.
RUNTIME_KEYS = {
    "tariff_id",
    "cable_id",
    "SC",
    "UV",
    "UD",
    "signed_start_value",
    "temperature_warning_level_C",
    "temperature_error_level_C",
    "temperature_hysteresis_K",
    "temperature_min_time_as_valid_ms",
    "ntp_server_1_ip_addr",
    "ntp_server_1_port",
    "ntp_server_2_ip_addr",
    "ntp_server_2_port",
    "meter_timezone",
    "meter_dst",
    "command_timeout_ms",
    "resilience_transaction_request_retries",
    "resilience_transaction_request_retry_delay",
    "stop_record_wait_ms",
    "stop_minimum_wait_ms",
}


class TimeoutProbe:
    """A transport that answers 200 and remembers each request's timeout."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: Any = None, timeout_s: Any
    ) -> tuple[int, str]:
        self.timeouts.append(timeout_s)
        return 200, "{}"

    def close(self) -> None:
        pass


class Rig:
    """A controller over a fake meter, its temperature monitor, and the runtime config."""

    def __init__(self, **values: Any) -> None:
        self.config = config_from_mapping(
            {"ip_address": "192.0.2.10", "tariff_id": 1, "cable_id": 1, **values}
        )
        self.meter = FakeMeter()
        self.meter.v2 = True
        self.clock = ManualClock(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
        clock = clock_settings(self.config)
        timesync = TimeSync(
            self.meter,
            self.clock,
            timezone=clock.timezone,
            dst=clock.dst,
            ntp_servers=clock.ntp_servers,
        )
        self.controller = MeterController(
            self.meter, controller_settings(self.config), self.clock, timesync
        )
        self.outputs = RecordingOutputs()
        self.temperature = TemperatureMonitor(
            temperature_limits(self.config), self.outputs, self.clock
        )
        self.probe = TimeoutProbe()
        self.client = MeterClient(self.probe)  # type: ignore[arg-type]
        parts = RunningParts(self.controller, (self.client,), self.temperature)
        self.runtime = RuntimeConfig(self.config, parts)

    def start(self, transaction_id: str) -> None:
        assert self.controller.start_transaction(
            transaction_request({**REQUEST, "transaction_id": transaction_id})
        ).ok


def test_the_manifest_declares_exactly_the_documented_runtime_keys() -> None:
    assert runtime_keys() == RUNTIME_KEYS
    assert not CONNECTION_KEYS & runtime_keys()
    assert set(load_manifest()["config"]) >= CONNECTION_KEYS


def test_accepted_change_applies_to_the_next_start_while_the_running_one_keeps_its_values() -> None:
    rig = Rig()
    rig.controller.initialize()
    rig.start("tx-1")
    assert rig.runtime.change("tariff_id", "3") == ChangeAnswer("Accepted")
    assert rig.runtime.change("cable_id", "5") == ChangeAnswer("Accepted")
    assert rig.runtime.change("UV", "2.4.0") == ChangeAnswer("Accepted")
    assert rig.runtime.config.tariff_id == 3
    stopped = rig.controller.stop_transaction("tx-1")
    assert stopped.ok, stopped.error
    # The running transaction was started, and ends, with the values it began with.
    assert rig.meter.bodies["tx-1"]["tariffId"] == 1
    assert rig.meter.bodies["tx-1"]["cableId"] == 1
    assert stopped.record is not None
    # The meter's record names the cable compensation the transaction began with.
    assert parse_ocmf(stopped.record.ocmf).payload["RD"][0]["UC"]["UI"] == 1
    rig.start("tx-2")
    assert rig.meter.bodies["tx-2"]["tariffId"] == 3
    assert rig.meter.bodies["tx-2"]["cableId"] == 5
    assert rig.meter.bodies["tx-2"]["UV"] == "2.4.0"


def test_a_new_timezone_is_written_only_once_no_transaction_runs() -> None:
    rig = Rig()
    rig.controller.initialize()
    rig.start("tx-1")
    rig.meter.settings_writes.clear()
    assert rig.runtime.change("meter_timezone", "+02:00") == ChangeAnswer("Accepted")
    assert rig.controller.next_background_work == rig.clock.monotonic()
    rig.controller.housekeeping()
    assert rig.meter.settings_writes == []  # the meter refuses time writes during a transaction
    assert rig.controller.stop_transaction("tx-1").ok
    rig.controller.housekeeping()
    assert {"time": {"tz": "+02:00"}} in rig.meter.settings_writes


def test_temperature_levels_and_the_command_timeout_apply_at_once() -> None:
    rig = Rig()
    measure = LiveMeasure(400.0, 1.0, 0.4, 70.0, 70.0, 1.0, 0.0, "2026-11-22T10:00:00+00:00")
    hot = powermeter_value(measure, "1", rig.clock.utc_now())
    rig.temperature.observe(hot)
    assert rig.runtime.change("temperature_warning_level_C", "60") == ChangeAnswer("Accepted")
    assert rig.runtime.change("temperature_min_time_as_valid_ms", "0") == ChangeAnswer("Accepted")
    rig.temperature.observe(hot)
    assert rig.temperature.active("TemperatureWarning")
    assert rig.runtime.change("command_timeout_ms", "1500") == ChangeAnswer("Accepted")
    rig.client.settings()
    assert rig.probe.timeouts[-1] == 1.5


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("tariff_id", "9", "must be <= 4, got 9"),
        ("tariff_id", "three", "cannot read 'three' as integer"),
        ("meter_timezone", "+25:00", "expected +HH:MM or -HH:MM"),
        ("meter_dst", "{not json", "not valid JSON"),
        ("ntp_server_1_ip_addr", "ntp example", "not an IP address or host name"),
        ("signed_start_value", "maybe", "cannot read 'maybe' as boolean"),
        ("temperature_hysteresis_K", "nan", "must be a finite number"),
        ("port", "70000", "must be a port number"),
        ("no_such_key", "1", "unknown key"),
    ],
)
def test_a_bad_value_is_rejected_with_the_start_up_reason_and_changes_nothing(
    key: str, value: str, problem: str
) -> None:
    rig = Rig()
    answer = rig.runtime.change(key, value)
    assert answer.status == "Rejected"
    assert f"config key '{key}'" in answer.reason
    assert problem in answer.reason
    assert rig.runtime.config == rig.config


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("ip_address", "192.0.2.99", "needs a new connection to the meter"),
        ("port", "8443", "needs a new connection to the meter"),
        ("meter_tls_certificate", "", "needs a new connection to the meter"),
        ("api_version", "v1", "is read only at start-up"),
        ("IT", "3", "is read only at start-up"),
        ("journal_max_transactions", "50", "is read only at start-up"),
    ],
)
def test_a_key_needing_a_restart_is_answered_reboot_required_and_left_as_running(
    key: str, value: str, why: str
) -> None:
    rig = Rig()
    rig.controller.initialize()
    answer = rig.runtime.change(key, value)
    assert answer == ChangeAnswer(
        "RebootRequired", f"config key '{key}' {why}; it applies after a restart"
    )
    assert rig.runtime.config == rig.config
    rig.start("tx-1")
    assert rig.meter.bodies["tx-1"]["tariffId"] == 1


def test_the_running_config_is_what_start_up_builds() -> None:
    config: ModuleConfig = Rig(meter_dst=json.dumps({"activated": True})).config
    assert clock_settings(config).dst == {"activated": True}
    assert controller_settings(config).measurement_timeout_s == 2.0


def test_the_docs_table_names_every_key_once_and_the_runtime_ones_as_such() -> None:
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "runtime-config.md"
    named: dict[str, bool] = {}
    for line in doc.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        for key in cells[0].replace("`", "").split(", "):
            assert key not in named, key
            named[key] = cells[1] == "yes"
    assert set(named) == set(load_manifest()["config"])
    assert {key for key, runtime in named.items() if runtime} == runtime_keys()


def test_a_change_never_waits_for_a_command_in_progress() -> None:
    import threading

    rig = Rig()
    rig.controller.initialize()
    holding, release = threading.Event(), threading.Event()

    def command_at_the_meter() -> None:
        with rig.controller._lock:  # as a stop waiting for its record holds it
            holding.set()
            release.wait(10)

    worker = threading.Thread(target=command_at_the_meter)
    worker.start()
    try:
        assert holding.wait(5)
        assert rig.runtime.change("tariff_id", "4") == ChangeAnswer("Accepted")
        assert rig.runtime.change("meter_timezone", "+03:00") == ChangeAnswer("Accepted")
    finally:
        release.set()
        worker.join(5)
    rig.start("tx-1")
    assert rig.meter.bodies["tx-1"]["tariffId"] == 4
    assert {"time": {"tz": "+03:00"}} in rig.meter.settings_writes  # synced before the start
