"""EVerest's own FastAPI mock of the meter, with the expectations of EVerest's SIL test.

The mock lives beside the checkout (``../shared/reference/everest/lem-dcbm-api-mock``);
the project does not copy it. It answers ``GET /v1/legal`` with 405, refuses every
setting but the UTC time (422), and serves a fixed record of another meter, so the
module runs with ``record_identity_checks: report`` as a SIL setup would.
EVerest's SIL test (``test_lem_dcbm_400_600_sil.py``) expects a powermeter publication at
least every 1.25 s, a start answered OK whose max minus min stop time is 48 h - 3 min
(within 0.1 min), and a stop answered OK; each test there starts a fresh EVerest.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest

from lem_dcbm.harness import Broker, ModuleProcess, free_port, start_module, write_config
from lem_dcbm.harness.processes import spawn, stop_processes
from lem_dcbm.harness.waiting import wait_listening
from tests.support.everest_peer import EverestPeer

pytestmark = pytest.mark.integration

MOCK_DIR = Path(__file__).parents[3] / "shared" / "reference" / "everest" / "lem-dcbm-api-mock"
MISSING = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
if not (MOCK_DIR / "main.py").is_file():
    pytest.skip(f"EVerest's meter mock is not at {MOCK_DIR}", allow_module_level=True)
if MISSING:
    pytest.skip(f"{' and '.join(MISSING)} not installed (test extras)", allow_module_level=True)

#: The request EVerest's SIL test sends.
SIL_START: dict[str, Any] = {
    "evse_id": "mock_evse_id",
    "transaction_id": "e2e_test_transaction",
    "identification_status": "ASSIGNED",
    "identification_flags": [],
    "identification_type": "ISO14443",
}
#: What EVerest's SIL test allows between two publications, seconds.
PUBLICATION_GAP_S = 1.25


@pytest.fixture
def everest_mock(tmp_path: Path) -> Iterator[int]:
    """EVerest's mock under uvicorn on a free port of 127.0.0.1; yields the port."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(MOCK_DIR)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = tmp_path / "everest-mock.log"
    process = spawn(argv, log, cwd=tmp_path)
    try:
        wait_listening("127.0.0.1", port, process, "EVerest's meter mock", timeout_s=30.0)
        yield port
    finally:
        stop_processes([process])


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


def sil_config(port: int) -> dict[str, Any]:
    """EVerest's config-standalone-lemdcbm400600.yaml, on the mock's port, for a mock."""
    return {"ip_address": "localhost", "port": port, "record_identity_checks": "report"}


def run_module(workdir: Path, port: int, broker: Broker) -> ModuleProcess:
    """A fresh module (own journal) against the mock, as each SIL test starts EVerest."""
    config = write_config(workdir / "config.yaml", sil_config(port))
    return start_module(workdir, config, broker.port)


def finish(module: ModuleProcess) -> str:
    """Stop the module (it must exit 0) and return its log."""
    code = module.terminate()
    log = module.log()
    assert code == 0, log
    return log


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_sil_publications_start_and_stop_against_everests_mock(
    tmp_path: Path, everest_mock: int, mosquitto: Broker, peer: EverestPeer
) -> None:
    module = run_module(tmp_path / "run", everest_mock, mosquitto)
    try:
        samples = peer.wait_for_var("powermeter", 5, timeout=30)[:5]
        gaps = [b.received_at - a.received_at for a, b in zip(samples, samples[1:], strict=False)]
        assert max(gaps) <= PUBLICATION_GAP_S, gaps

        started = peer.call("start_transaction", {"value": SIL_START}, timeout=20)["retval"]
        assert started["status"] == "OK", started
        window = parse_time(started["transaction_max_stop_time"]) - parse_time(
            started["transaction_min_stop_time"]
        )
        assert abs(window - (timedelta(hours=48) - timedelta(minutes=3))) <= timedelta(minutes=0.1)

        stopped = peer.call("stop_transaction", {"transaction_id": SIL_START["transaction_id"]}, 40)
        assert stopped["retval"]["status"] == "OK", stopped
    finally:
        log = finish(module)
    # What the mock lacks is said once, and the foreign record is named, not hidden.
    assert log.count("not asked again this run") == 1, log
    assert "passed on because record_identity_checks is 'report'" in log


def test_sil_stop_of_a_transaction_a_fresh_module_did_not_start(
    tmp_path: Path, everest_mock: int, mosquitto: Broker, peer: EverestPeer
) -> None:
    # EVerest's SIL stop test runs in a fresh EVerest: the module never started the id.
    module = run_module(tmp_path / "run", everest_mock, mosquitto)
    try:
        peer.wait_for_var("powermeter", 1, timeout=30)
        stopped = peer.call("stop_transaction", {"transaction_id": "mock_transaction_id"}, 40)
        assert stopped["retval"]["status"] == "OK", stopped
    finally:
        finish(module)


def test_the_mock_really_lacks_get_legal(everest_mock: int) -> None:
    # Guards the premise: should EVerest's mock ever gain GET /legal, this says so.
    with pytest.raises(HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{everest_mock}/v1/legal", timeout=5)  # noqa: S310
    refused.value.close()
    assert refused.value.code == 405
