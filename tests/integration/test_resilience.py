"""Faults with real processes: a killed module, a failing meter, a cut broker link, signals.

Every test runs mosquitto, the simulator and the module as a subprocess with a journal
directory of its own, and talks to the module as an EVerest consumer would.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    ModuleProcess,
    Simulator,
    port_open,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.harness import (
    transaction_request as request,
)
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.service import journal_directory
from lem_dcbm.simulator.ocmf_signer import tamper_record
from tests.support.everest_peer import EverestPeer, Received
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OCMF_PATHS = ["/v1/ocmf", "/v2/ocmf"]
LEGAL_PATHS = ["/v1/legal", "/v2/legal"]
#: How long the meter stays unreachable in the outage test (part of its definition): the
#: raise comes within 5 s (asserted), and the readings that keep failing after it must
#: not raise again.
METER_OUTAGE_S = 7.0
#: How long the broker link stays cut (long enough for a few dropped measurements).
BROKER_CUT_S = 5.0


def new_transaction_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


def run_module(tmp_path: Path, sim: Simulator, broker_port: int, **overrides: Any) -> ModuleProcess:
    """Start the module on ``sim`` with a journal under ``tmp_path``."""
    values = simulator_config(sim, journal_dir=str(tmp_path / "journal"), **overrides)
    config = write_config(tmp_path / "config.yaml", values)
    return start_module(tmp_path, config, broker_port)


def ready(peer: EverestPeer, keys_before: int = 0) -> str:
    """Wait for a measurement and a (new) ``public_key_ocmf``; return the key."""
    keys = peer.wait_for_var("public_key_ocmf", keys_before + 1, timeout=20)
    peer.wait_for(
        lambda: any(s.received_at >= keys[-1].received_at for s in peer.vars("powermeter")),
        10,
        "a measurement after the public key",
    )
    return str(keys[-1].value)


def start(peer: EverestPeer, transaction_id: str) -> None:
    answer = peer.call("start_transaction", {"value": request(transaction_id)}, timeout=15)
    assert answer["retval"]["status"] == "OK", answer


def ready_and_started(peer: EverestPeer) -> tuple[str, str]:
    """Wait until the module is ready and start a new transaction; return (key, id)."""
    key = ready(peer)
    transaction_id = new_transaction_id()
    start(peer, transaction_id)
    return key, transaction_id


def stop(peer: EverestPeer, transaction_id: str) -> dict[str, Any]:
    """The ``retval`` of ``stop_transaction``."""
    answer = peer.call("stop_transaction", {"transaction_id": transaction_id}, timeout=20)
    retval: dict[str, Any] = answer["retval"]
    return retval


def assert_verified_record(retval: dict[str, Any], key: str, module: ModuleProcess) -> str:
    """The stop answered OK with an OCMF record that verifies with ``key``; return it."""
    assert retval["status"] == "OK", f"{retval}\n{module.log()[-4000:]}"
    value = retval["signed_meter_value"]
    assert value["encoding_method"] == "OCMF"
    assert value["public_key"] == key
    record = str(value["signed_meter_data"])
    assert verify_ocmf(record, key), record
    return record


def meter_transaction(sim: Simulator, transaction_id: str) -> dict[str, Any]:
    """The simulator's own view of one transaction."""
    found = [t for t in sim.state()["transactions"] if t["transactionId"] == transaction_id]
    assert found, f"the meter does not know transaction {transaction_id}"
    entry: dict[str, Any] = found[-1]
    return entry


def error_events(peer: EverestPeer, error_type: str) -> list[tuple[str, Received]]:
    """``(msg_type, message)`` of every raise and clear of ``error_type`` (``ns/Name``)."""
    topic = f"{peer.impl_base}/error/{error_type}"
    return [(m.json()["msg_type"], m) for m in peer.on_topic(topic)]


def ocmf_requests(sim: Simulator) -> int:
    counts = sim.state()["requests"]
    return sum(n for key, n in counts.items() if key.startswith("GET /v") and "/ocmf" in key)


# --- the proxy itself ------------------------------------------------------------------


def echo_server() -> tuple[socket.socket, int]:
    """A listening socket whose connections the test answers by hand."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    return server, server.getsockname()[1]


def test_proxy_relays_cuts_and_restores() -> None:
    server, port = echo_server()
    with server, TcpProxy("127.0.0.1", port) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        accepted, _ = server.accept()
        accepted.settimeout(2)
        client.sendall(b"ping")
        assert accepted.recv(16) == b"ping"
        accepted.sendall(b"pong")
        assert client.recv(16) == b"pong"

        assert proxy.cut() == 1
        # Both ends see the connection end at once.
        assert client.recv(16) == b""
        assert accepted.recv(16) == b""
        assert not port_open("127.0.0.1", proxy.port)

        proxy.restore()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        second, _ = server.accept()
        second.settimeout(2)
        again.sendall(b"back")
        assert second.recv(16) == b"back"
        for sock in (client, accepted, again, second):
            sock.close()
        wait_until(lambda: proxy.active_connections == 0, 2, what="the relay to notice")


# --- the module ------------------------------------------------------------------------


def test_sigkill_after_start_then_restart_stops_with_verified_record(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path, simulator, mosquitto.port)
    restarted: ModuleProcess | None = None
    try:
        key, transaction_id = ready_and_started(peer)
        module.kill()

        # The start was answered, so it must be on disk at the instant of the kill.
        journal = TransactionJournal(journal_directory(str(tmp_path / "journal"), MODULE_ID))
        entry = journal.get(transaction_id)
        assert entry is not None, module.log()[-3000:]
        assert entry.started, entry

        keys_before = len(peer.vars("public_key_ocmf"))
        restarted = run_module(tmp_path, simulator, mosquitto.port)
        assert ready(peer, keys_before) == key
        assert simulator.state()["running_transaction"] == transaction_id

        assert_verified_record(stop(peer, transaction_id), key, restarted)
        assert simulator.state()["running_transaction"] is None
    finally:
        module.kill()
        if restarted is not None:
            assert restarted.terminate() == 0, restarted.log()


def test_failed_record_fetch_at_stop_is_returned_by_a_second_stop(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path, simulator, mosquitto.port, stop_record_wait_ms=1000)
    try:
        key, transaction_id = ready_and_started(peer)

        simulator.set_faults(http_status=500, paths=OCMF_PATHS)
        first = stop(peer, transaction_id)
        assert first["status"] == "UNEXPECTED_ERROR", first
        assert "stopped" in first.get("error", ""), first
        assert simulator.state()["running_transaction"] is None
        assert not meter_transaction(simulator, transaction_id)["running"]
        assert simulator.state()["faults_applied"] >= 1

        simulator.clear_faults()
        assert_verified_record(stop(peer, transaction_id), key, module)
    finally:
        assert module.terminate() == 0, module.log()


def test_command_sent_while_broker_link_is_cut_is_answered_after_restore(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    with TcpProxy(mosquitto.host, mosquitto.port) as link:
        module = run_module(tmp_path, simulator, link.port)
        try:
            ready(peer)
            peer.wait_for_var("powermeter", 3)
            keys_before = len(peer.vars("public_key_ocmf"))
            log_before = len(module.log())

            link.cut()
            cut_at = time.monotonic()
            # The TCP connection ends, so the module notices at once (not after keepalive).
            wait_until(
                lambda: "disconnected from the MQTT broker" in module.log()[log_before:],
                2,
                what="the module to notice the cut",
            )
            detected_after = time.monotonic() - cut_at

            transaction_id = new_transaction_id()
            call_id = peer.call_async("start_transaction", {"value": request(transaction_id)})
            # A fixed-length cut is the scenario itself, not a wait for something.
            time.sleep(max(0.0, BROKER_CUT_S - (time.monotonic() - cut_at)))
            assert not peer.responses("start_transaction"), "answered while cut off"

            link.restore()
            restored_at = time.monotonic()

            result = peer.result(call_id, timeout=10)
            assert result["retval"]["status"] == "OK", result
            answered = [
                m
                for m in peer.responses("start_transaction")
                if m.json()["data"]["data"]["id"] == call_id
            ]
            answer_delay = answered[0].received_at - restored_at
            assert answer_delay < 10, f"answered {answer_delay:.1f} s after the restore"
            assert simulator.state()["running_transaction"] == transaction_id

            peer.wait_for(
                lambda: (
                    len([s for s in peer.vars("powermeter") if s.received_at > restored_at]) >= 3
                ),
                10,
                "measurements after the restore",
            )
            peer.wait_for(
                lambda: any(s.received_at > restored_at for s in peer.vars("public_key_ocmf")),
                10,
                "public_key_ocmf after the restore",
            )
            assert len(peer.vars("public_key_ocmf")) > keys_before

            # Measurements taken while offline are dropped, not delivered late: the meter's
            # timestamps (whole seconds, meter clock) show a hole where the cut was.
            stamps = sorted({parse_wall(s.value["timestamp"]) for s in peer.vars("powermeter")})
            assert len(stamps) >= 4, stamps
            hole = max(later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False))
            assert hole >= BROKER_CUT_S - 2, f"measurements from the cut arrived late: {stamps}"
            assert len(answered) == 1, "the call was answered more than once"
            print(f"cut noticed after {detected_after:.2f} s; answered {answer_delay:.2f} s")
        finally:
            assert module.terminate() == 0, module.log()


def parse_wall(timestamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_meter_outage_raises_and_clears_communication_fault_once(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    with TcpProxy(simulator.host, simulator.port) as meter_link:
        module = run_module(
            tmp_path, simulator, mosquitto.port, ip_address=meter_link.host, port=meter_link.port
        )
        try:
            key, transaction_id = ready_and_started(peer)
            fault = "powermeter/CommunicationFault"
            assert not error_events(peer, fault)

            meter_link.cut()
            cut_at = time.monotonic()
            raised = peer.wait_for(lambda: error_events(peer, fault), 10, "the raise")
            raise_delay = raised[0][1].received_at - cut_at

            during = stop(peer, transaction_id)
            assert during["status"] == "UNEXPECTED_ERROR", during
            assert simulator.state()["running_transaction"] == transaction_id

            # The outage lasts a fixed time by definition.
            time.sleep(max(0.0, METER_OUTAGE_S - (time.monotonic() - cut_at)))
            meter_link.restore()
            restored_at = time.monotonic()
            cleared = peer.wait_for(
                lambda: [e for e in error_events(peer, fault) if e[0] == "ClearError"],
                10,
                "the clear",
            )
            clear_delay = cleared[0][1].received_at - restored_at

            assert_verified_record(stop(peer, transaction_id), key, module)
            # A few more cycles on a healthy link, to catch a late second raise.
            count = len(peer.vars("powermeter"))
            peer.wait_for_var("powermeter", count + 2, timeout=10)

            kinds = [kind for kind, _ in error_events(peer, fault)]
            timing = f"raised {raise_delay:.2f} s after the cut, cleared {clear_delay:.2f} s after"
            assert kinds == ["RaiseError", "ClearError"], f"{kinds}; {timing}"
            assert raise_delay < 5, timing
            assert clear_delay < 5, timing
            print(timing)
        finally:
            assert module.terminate() == 0, module.log()


def test_a_meter_dribbling_its_answers_raises_communication_fault(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    # Every pause (0.5 s) within the 2 s reading timeout, each answer some 40 s long: only
    # a deadline on the whole request tells that the meter no longer answers.
    module = run_module(tmp_path, simulator, mosquitto.port)
    try:
        ready(peer)
        fault = "powermeter/CommunicationFault"
        simulator.set_faults(drip_ms=500, paths=["/v1/livemeasure", "/v2/livemeasure"])
        dripping_at = time.monotonic()
        raised = peer.wait_for(lambda: error_events(peer, fault), 15, "the raise")
        assert raised[0][1].received_at - dripping_at < 8
        simulator.clear_faults()
        peer.wait_for(
            lambda: [e for e in error_events(peer, fault) if e[0] == "ClearError"], 10, "the clear"
        )
    finally:
        assert module.terminate() == 0, module.log()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_command_in_flight_answers_and_exits_cleanly(
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: Broker,
    peer: EverestPeer,
    signum: signal.Signals,
) -> None:
    module = run_module(tmp_path, simulator, mosquitto.port)
    try:
        ready(peer)
        simulator.set_faults(latency_ms=1000, paths=LEGAL_PATHS, count=1)
        transaction_id = new_transaction_id()
        call_id = peer.call_async("start_transaction", {"value": request(transaction_id)})
        # The slow request has reached the meter: the command is in flight.
        wait_until(lambda: simulator.state()["faults_applied"] >= 1, 10, what="the slow request")

        signalled_at = time.monotonic()
        module.process.send_signal(signum)
        result = peer.result(call_id, timeout=5)
        code = module.process.wait(5)
        exit_after = time.monotonic() - signalled_at

        assert result["retval"]["status"] == "OK", f"{result}\n{module.log()[-3000:]}"
        assert code == 0, module.log()
        assert exit_after < 5, f"exited {exit_after:.1f} s after the signal"
        assert "Traceback" not in module.log(), module.log()
    finally:
        module.kill()


def test_sigterm_waits_for_a_start_the_meter_takes_8_s_to_answer(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    """A start still at the meter is answered and journaled before the module exits."""
    module = run_module(tmp_path, simulator, mosquitto.port, command_timeout_ms=15000)
    try:
        ready(peer)
        simulator.set_faults(latency_ms=8000, paths=LEGAL_PATHS, methods=["POST"], count=1)
        transaction_id = new_transaction_id()
        call_id = peer.call_async("start_transaction", {"value": request(transaction_id)})
        wait_until(lambda: simulator.state()["faults_applied"] >= 1, 10, what="the slow start")
        module.process.send_signal(signal.SIGTERM)
        result = peer.result(call_id, timeout=30)
        code = module.process.wait(30)
        assert result["retval"]["status"] == "OK", f"{result}\n{module.log()[-3000:]}"
        assert code == 0, module.log()
        assert "waiting up to" in module.log()
        assert simulator.state()["running_transaction"] == transaction_id
        entry = TransactionJournal(journal_directory(str(tmp_path / "journal"), MODULE_ID)).get(
            transaction_id
        )
        assert entry is not None
        assert entry.started
    finally:
        module.kill()


def test_tampered_record_is_reported_and_returned_unchanged(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path, simulator, mosquitto.port, error_profile="everest-2026.02")
    try:
        key, transaction_id = ready_and_started(peer)
        simulator.set_faults(tamper_ocmf=True, paths=OCMF_PATHS)
        fetched_before = ocmf_requests(simulator)

        retval = stop(peer, transaction_id)
        assert retval["status"] == "OK", f"{retval}\n{module.log()[-3000:]}"
        record = retval["signed_meter_value"]["signed_meter_data"]
        original = meter_transaction(simulator, transaction_id)["ocmf"]
        assert verify_ocmf(original, key), "the simulator signed a bad record"
        assert record == tamper_record(original), "the record was not passed on unchanged"
        assert not verify_ocmf(record, key)
        assert ocmf_requests(simulator) - fetched_before >= 2, "the record was not fetched again"

        warnings = peer.wait_for(
            lambda: [
                data
                for data in peer.errors_raised
                if data["type"] == "powermeter/VendorWarning"
                and data["sub_type"] == "OcmfSignatureInvalid"
            ],
            5,
            "VendorWarning OcmfSignatureInvalid",
        )
        assert transaction_id in warnings[0]["message"], warnings
        errors = [
            line
            for line in module.log().splitlines()
            if " ERROR " in line and transaction_id in line
        ]
        assert errors, module.log()[-3000:]
    finally:
        assert module.terminate() == 0, module.log()
