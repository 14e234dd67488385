"""The module as a process keeps an untrusted host time out of the meter.

The simulator's clock is the host's; its meter clock is set 3 days behind it with a
valid time sync, which makes the host clock 3 days ahead of a meter it should agree with.
``host_clock_trust: meter`` takes the kernel's word out of the test, so it behaves alike
on hosts whose kernel clock is synchronised and on those where it is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import (
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    start_simulator,
    write_config,
)
from lem_dcbm.ocmf import parse_ocmf
from tests.support.everest_peer import EverestPeer

pytestmark = pytest.mark.integration

THREE_DAYS_S = 3 * 24 * 3600
UNTRUSTED = "host clock not written into the meter"


def request(transaction_id: str) -> dict[str, Any]:
    return {
        "evse_id": "DE*LEM*E0001",
        "transaction_id": transaction_id,
        "identification_status": "ASSIGNED",
        "identification_type": "ISO14443",
        "identification_flags": [],
    }


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


@contextmanager
def run_module(
    tmp_path: Path, sim: Simulator, broker: Broker, profile: str = "everest-2026.02"
) -> Iterator[ModuleProcess]:
    values = simulator_config(
        sim, host_clock_trust="meter", error_profile=profile, meter_timezone="+01:00"
    )
    module = start_module(tmp_path, write_config(tmp_path / "config.yaml", values), broker.port)
    try:
        yield module
    finally:
        assert module.terminate() == 0, module.log()


def utc_writes(sim: Simulator) -> list[Any]:
    return [w for w in sim.state()["settings_writes"] if "utc" in w["body"].get("time", {})]


def record_times(record: str) -> list[datetime]:
    readings = parse_ocmf(record).payload["RD"]
    stamps = [r["TM"].split(" ")[0].replace(",", ".") for r in readings if "TM" in r]
    return [datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z") for s in stamps]


@pytest.mark.parametrize("profile", ["everest-2026.02", "everest-main"])
def test_a_host_clock_three_days_ahead_stays_out_of_the_meter_and_its_records(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer, profile: str
) -> None:
    simulator.control("PUT", "/_sim/clock", {"offset_s": -THREE_DAYS_S})
    with run_module(tmp_path, simulator, mosquitto, profile) as module:
        peer.wait_for_var("powermeter", 2, timeout=20)
        simulator.set_load(power_kw=22.0)
        records = []
        for transaction_id in ("clock-1", "clock-2"):
            started = peer.call("start_transaction", {"value": request(transaction_id)}, 15)
            assert started["retval"]["status"] == "OK", started
            stopped = peer.call("stop_transaction", {"transaction_id": transaction_id}, 15)
            assert stopped["retval"]["status"] == "OK", stopped
            records.append(stopped["retval"]["signed_meter_value"]["signed_meter_data"])
        assert utc_writes(simulator) == []
        if profile == "everest-2026.02":  # its EvseManager goes on charging on a VendorWarning
            [error] = peer.wait_for(
                lambda: [e for e in peer.errors_raised if e["sub_type"] == "HostClockUntrusted"],
                what="HostClockUntrusted raised",
            )
            assert error["type"].endswith("/VendorWarning")
            assert re.search(r"\+2592\d\d s off the meter's valid clock", error["message"])
        log = module.log()

    host_now = datetime.now(timezone.utc)
    for record in records:
        for stamp in record_times(record):
            assert timedelta(days=2, hours=23) < host_now - stamp < timedelta(days=3, hours=1)
    if profile == "everest-main":
        assert peer.errors_raised == []  # its EvseManager would stop charging on one
    said = [line for line in log.splitlines() if UNTRUSTED in line]
    assert len(said) == 1, said  # one line, not one per judgement or start
    assert "HostClockUntrusted" in said[0]
    assert "meter clock synchronised" not in log


def test_first_boot_without_a_trusted_clock_refuses_the_start_and_writes_nothing(
    tmp_path: Path, mosquitto: Broker, peer: EverestPeer
) -> None:
    with start_simulator(tmp_path / "simulator", unsynced=True) as sim:
        with run_module(tmp_path, sim, mosquitto):
            peer.wait_for_var("powermeter", 2, timeout=20)
            answer = peer.call("start_transaction", {"value": request("first-boot")}, 15)
            counts = sim.state()["requests"]
        retval = answer["retval"]
        assert retval["status"] == "UNEXPECTED_ERROR"
        assert "host clock is not trusted" in retval["error"]
        assert "the meter's own time sync is not valid" in retval["error"]
        assert not any(key.startswith("POST") for key in counts), counts
        assert utc_writes(sim) == []
