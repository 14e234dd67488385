"""Runtime changes a manager would never send: each gets an answer, none is logged in full.

A 2026 manager (simulated over real mosquitto) and the module as a process (module.py,
as the manager starts it) against the simulator over sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.harness import (
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    start_simulator,
)
from tests.integration import test_module_modes
from tests.integration.test_module_modes import manager_env
from tests.support.everest_peer import EverestPeer, dumps, parameters_from_values

pytestmark = pytest.mark.integration

peer = test_module_modes.peer


def managed_module(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> Iterator[ModuleProcess]:
    """The module as the 2026 manager starts it, shut down by the manager at the end."""
    peer.act_as_manager("2026", parameters_from_values(simulator_config(simulator, cable_id=1)))
    running = start_module(
        tmp_path, None, mosquitto.port, env=manager_env(mosquitto), entry="module.py"
    )
    try:
        peer.wait_for(lambda: peer.module_ready, 20, "ModuleReady")
        peer.clear_retained()
        peer.send_global_ready()
        peer.wait_for_var("powermeter", 1, timeout=10)
        yield running
        assert running.process.poll() is None, running.log_tail()
        peer.send_shutdown()
        assert running.process.wait(10) == 0, running.log()
    finally:
        if running.process.poll() is None:
            running.kill()


@pytest.fixture
def module(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> Iterator[ModuleProcess]:
    yield from managed_module(tmp_path, simulator, mosquitto, peer)


# The integer texts share one module per worker: each test leaves cable_id at 3, as it
# found it or set it, and a module process per text spent most of this file's time.
@pytest.fixture(scope="module")
def shared_module(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ModuleProcess, EverestPeer]]:
    tmp_path = tmp_path_factory.mktemp("integer-texts")
    with (
        Broker(tmp_path / "broker") as broker,
        start_simulator(tmp_path / "simulator") as simulator,
        EverestPeer(broker.host, broker.port) as peer,
    ):
        running = managed_module(tmp_path, simulator, broker, peer)
        yield next(running), peer
        next(running, None)  # the manager's shutdown and its checks


@pytest.fixture
def shared_peer(shared_module: tuple[ModuleProcess, EverestPeer]) -> Iterator[EverestPeer]:
    module, peer = shared_module
    yield peer
    # The next text must not meet a module this one ended.
    assert module.process.poll() is None, module.log_tail()


def test_a_set_request_nested_5000_levels_deep_gets_an_error_answer(
    module: ModuleProcess, peer: EverestPeer
) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    payload = (
        b'{"msg_type":"ConfigurationRequest","data":{"identifier":{"module_id":"powermeter_1",'
        b'"configuration_parameter_name":"cable_id"},"value":' + deep + b"}}"
    )
    answer = peer.set_config_raw(payload)
    assert answer["status"] == "Error"
    assert answer["response"]["status"] == "Rejected"
    assert "5002 levels deep" in answer["status_info"]
    assert "RecursionError" not in module.log()
    # Still answering.
    assert peer.set_config("cable_id", "2")["response"]["status"] == "Accepted"


@pytest.mark.parametrize("text", [" 3", "+3", "\u0663", "3\n", "3 ", "03", "3.0", "1_0"])
def test_only_the_canonical_text_of_an_integer_is_taken(
    shared_peer: EverestPeer, text: str
) -> None:
    peer = shared_peer
    answer = peer.set_config("cable_id", text)
    assert answer["response"]["status"] == "Rejected", answer
    assert "config key 'cable_id': cannot read" in answer["response"]["status_info"]
    assert peer.set_config("cable_id", "3")["response"]["status"] == "Accepted"


def test_a_long_value_is_cut_in_the_answer_and_the_log(
    module: ModuleProcess, peer: EverestPeer
) -> None:
    huge = "7" * 1_000_000
    answer = peer.set_config("cable_id", huge)
    assert answer["response"]["status"] == "Rejected"
    assert "config key 'cable_id'" in answer["response"]["status_info"]
    assert len(answer["response"]["status_info"]) < 300
    long_name = "k" * 100_000
    payload = dumps(
        {
            "msg_type": "ConfigurationRequest",
            "data": {
                "identifier": {
                    "module_id": "powermeter_1",
                    "configuration_parameter_name": long_name,
                },
                "value": huge,
            },
        }
    )
    assert peer.set_config_raw(payload)["response"]["status"] == "Rejected"
    log = module.log()
    assert "7" * 1000 not in log
    assert "k" * 1000 not in log
