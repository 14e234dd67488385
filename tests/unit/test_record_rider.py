"""Records no transaction event carries ride on the powermeter var, for OCPP's idle meter values.

libocpp (OCPP 2.0.1) sends an idle EVSE's latest powermeter value at every clock-aligned
interval, with its ``signed_meter_value`` on ``Energy.Active.Import.Register``. The record
of a stop answered before the meter allowed it, and the record of EvseManager's start-up
recovery stop, reach the CSMS that way: never during a transaction, for a set idle time.
"""

from __future__ import annotations

from pathlib import Path

from lem_dcbm.core.record_rider import MAX_WAITING, RecordRider
from lem_dcbm.core.results import SignedRecord
from lem_dcbm.everest.shapes import powermeter_var, transaction_request
from tests.support.record_rig import Rig, request
from tests.unit.test_short_sessions import ShortRig

RIDE_S = 905.0


def signed(name: str) -> SignedRecord:
    return SignedRecord(f"OCMF|{{{name}}}|{{}}", "key")


def test_no_ride_when_switched_off() -> None:
    rider = RecordRider(0.0)
    rider.carry("tx", signed("a"), now=0.0)
    assert not rider.enabled
    assert rider.current(1.0, transaction_running=False) is None
    assert rider.riding == []


def test_a_record_rides_its_idle_time_then_the_next_one() -> None:
    rider = RecordRider(10.0)
    rider.carry("tx-a", signed("a"), now=0.0)
    rider.carry("tx-b", signed("b"), now=0.0)
    rider.carry("tx-a", signed("a"), now=0.0)  # the same record again: once is enough
    assert rider.riding == ["tx-a", "tx-b"]
    assert rider.current(0.0, transaction_running=False) == signed("a")
    assert rider.current(9.0, transaction_running=False) == signed("a")
    assert rider.current(10.0, transaction_running=False) == signed("b")
    assert rider.current(19.5, transaction_running=False) == signed("b")
    assert rider.current(20.0, transaction_running=False) is None
    assert rider.riding == []


def test_a_transaction_pauses_the_ride_and_never_carries_it() -> None:
    rider = RecordRider(10.0)
    rider.carry("tx-a", signed("a"), now=0.0)
    assert rider.current(0.0, transaction_running=False) == signed("a")
    assert rider.current(6.0, transaction_running=False) == signed("a")
    # A transaction of 500 s: none of its publications carries the record.
    for moment in (6.5, 100.0, 506.0):
        assert rider.current(moment, transaction_running=True) is None
    # Idle again: the 4 s left are ridden, not the transaction's time.
    assert rider.current(507.0, transaction_running=False) == signed("a")
    assert rider.current(510.5, transaction_running=False) == signed("a")
    assert rider.current(511.0, transaction_running=False) is None


def test_the_waiting_line_is_bounded() -> None:
    rider = RecordRider(10.0)
    for number in range(MAX_WAITING + 3):
        rider.carry(f"tx-{number}", signed(str(number)), now=0.0)
    assert len(rider.riding) == MAX_WAITING
    assert rider.riding[0] == "tx-0"


def carried(rig: ShortRig | Rig) -> str | None:
    """The record the next publication carries, as EVerest's powermeter var shows it."""
    value = powermeter_var(rig.controller.read_powermeter()).get("signed_meter_value")
    if value is None:
        return None
    assert isinstance(value, dict)
    assert value["encoding_method"] == "OCMF"
    assert value["public_key"] == rig.controller.public_key_ocmf
    text = value["signed_meter_data"]
    assert isinstance(text, str)
    return text


def test_a_20_s_session_s_record_rides_once_fetched_and_not_in_the_next_session(
    tmp_path: Path,
) -> None:
    rig = ShortRig(tmp_path, stop_minimum_wait_s=15.0, record_ride_s=RIDE_S)
    assert rig.controller.start_transaction(transaction_request(request("short-20"))).ok
    rig.clock.advance(20.0)
    assert carried(rig) is None
    assert not rig.controller.stop_transaction("short-20").ok  # answered before the minimum
    assert carried(rig) is None  # nothing to carry until the meter allows the stop
    rig.clock.advance(102.0)
    rig.controller.housekeeping()
    [late] = rig.late.published
    assert rig.verifies(late.ocmf, "short-20")
    assert carried(rig) == late.ocmf
    rig.clock.advance(600.0)
    assert carried(rig) == late.ocmf
    # The next car: its transaction's values never carry the earlier record.
    assert rig.controller.start_transaction(transaction_request(request("next-1"))).ok
    for _ in range(3):
        rig.clock.advance(50.0)
        assert carried(rig) is None
    rig.clock.advance(10.0)
    stopped = rig.controller.stop_transaction("next-1")
    assert stopped.ok  # answered with its record: it has nothing to ride
    # The first record rides the idle time it has left (305 s), then nothing rides.
    assert carried(rig) == late.ocmf
    rig.clock.advance(300.0)
    assert carried(rig) == late.ocmf
    rig.clock.advance(6.0)
    assert carried(rig) is None
    assert rig.late.published == [late]


def test_the_record_of_the_start_up_recovery_stop_rides_too(tmp_path: Path) -> None:
    """A power loss: EvseManager's boot stop(remembered id) ends in no TransactionEvent."""
    rig = Rig(tmp_path)
    rig.restart(record_ride_s=RIDE_S)
    assert rig.controller.start_transaction(transaction_request(request("tx-1"))).ok
    rig.charge()
    rig.restart(record_ride_s=RIDE_S)  # the whole charger comes back; tx-1 still runs
    assert carried(rig) is None
    recovered = rig.controller.stop_transaction("tx-1")
    assert recovered.ok
    assert recovered.record is not None
    assert carried(rig) == recovered.record.ocmf


def test_a_record_answered_to_its_stop_does_not_ride(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.restart(record_ride_s=RIDE_S)
    assert rig.controller.start_transaction(transaction_request(request("tx-2"))).ok
    rig.charge()
    assert rig.controller.stop_transaction("tx-2").ok
    for _ in range(3):
        rig.clock.advance(5.0)
        rig.controller.housekeeping()
        assert carried(rig) is None
