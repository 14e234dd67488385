"""The simulated meter meters what a simulated car draws, published over MQTT.

Real mosquitto, the simulator as a process with ``--load-from-mqtt`` on the topic of
YetiSimulator's powermeter variable, and the module as a process. The load is published
in the 2026 manager's variable envelope; the energy in the transaction's OCMF record must
be the energy the module reported (its ``powermeter`` variable, what EvseManager bills
from) within the meter's resolution.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import (
    Broker,
    Simulator,
    simulator_config,
    start_module,
    start_simulator,
    wait_until,
    write_config,
)
from lem_dcbm.harness import transaction_request as request
from lem_dcbm.ocmf import verify_ocmf
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

YETI_TOPIC = "everest/modules/yeti_driver/impl/powermeter/var/powermeter"
#: The meter's resolution: OCMF readings in kWh with three decimals.
RESOLUTION_KWH = 0.001


def yeti_var(power_w: float, voltage_v: float = 230.0) -> bytes:
    """YetiSimulator's powermeter variable as the 2026 manager publishes it."""
    phase = power_w / 3
    value = {
        "timestamp": "2026-12-05T08:00:00.000Z",
        "meter_id": "YETI_POWERMETER",
        "energy_Wh_import": {"total": 0.0},
        "power_W": {"total": power_w, "L1": phase, "L2": phase, "L3": phase},
        "voltage_V": {"L1": voltage_v, "L2": voltage_v, "L3": voltage_v},
    }
    return json.dumps({"data": {"data": value}, "msg_type": "Var"}).encode()


@pytest.fixture
def car_metered(tmp_path: Path, mosquitto: Broker) -> Iterator[Simulator]:
    extra = ["--load-from-mqtt", YETI_TOPIC, "--load-broker", f"127.0.0.1:{mosquitto.port}"]
    with start_simulator(tmp_path / "simulator", extra_args=extra) as sim:
        yield sim


def readings(record: str) -> list[float]:
    payload = json.loads(record.split("|")[1])
    return [float(r["RV"]) for r in payload["RD"] if r["RI"] == "1-0:1.8.0"]


def test_the_bill_carries_the_energy_the_car_drew(
    tmp_path: Path, mosquitto: Broker, car_metered: Simulator
) -> None:
    with EverestPeer(mosquitto.host, mosquitto.port) as peer:
        # Retained, as the framework's variables are not: a late subscriber still gets it.
        peer.send_raw(YETI_TOPIC, yeti_var(0.0), retain=True)
        wait_until(lambda: car_metered.state()["load"]["voltage_v"] == 230.0, 20)
        values = simulator_config(car_metered, journal_dir=str(tmp_path / "journal"))
        config = write_config(tmp_path / "config.yaml", values)
        module = start_module(tmp_path, config, mosquitto.port)
        try:
            peer.wait_for_var("public_key_ocmf", 1, timeout=20)
            key = str(peer.vars("public_key_ocmf")[-1].value)

            def energy_wh() -> Any:
                return peer.vars("powermeter")[-1].value["energy_Wh_import"]["total"]

            peer.wait_for_var("powermeter", 1, timeout=20)
            before = energy_wh()
            transaction_id = str(uuid.uuid4())
            started = peer.call("start_transaction", {"value": request(transaction_id)}, 15)
            assert started["retval"]["status"] == "OK", started
            # The car draws 36 kW (10 Wh a second) for a while, then stops drawing.
            peer.send_raw(YETI_TOPIC, yeti_var(36000.0), retain=True)
            wait_until(lambda: energy_wh() >= before + 20.0, 30, what="the car's energy")
            peer.send_raw(YETI_TOPIC, yeti_var(0.0), retain=True)
            wait_until(lambda: car_metered.state()["load"]["power_kw"] == 0.0, 10)
            count = len(peer.vars("powermeter"))
            peer.wait_for_var("powermeter", count + 1, timeout=10)  # a reading after the car
            reported = energy_wh()
            answer = peer.call("stop_transaction", {"transaction_id": transaction_id}, 30)
            retval = answer["retval"]
            assert retval["status"] == "OK", retval
            record = retval["signed_meter_value"]["signed_meter_data"]
            assert verify_ocmf(record, key)
            begin_kwh, end_kwh = readings(record)
            # What the module reported (EvseManager's numbers) is what the bill says.
            assert begin_kwh == pytest.approx(before / 1000.0, abs=RESOLUTION_KWH)
            assert end_kwh == pytest.approx(reported / 1000.0, abs=RESOLUTION_KWH)
            assert end_kwh - begin_kwh >= 0.020
        finally:
            peer.send_raw(YETI_TOPIC, b"", retain=True)
            assert module.terminate() == 0, module.log_tail(40)
