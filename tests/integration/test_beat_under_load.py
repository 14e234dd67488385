"""The beat never waits for commands, clock writes or record fetches.

Every settings write and every record fetch takes 0.5 s at the meter, and start/stop
pairs run back to back for 20 s (a pair takes about 2.6 s). A beat that waited for any of
them would show a period at least half of that wait too long; none does, and the beat
does not drift (each late publication is caught up by the next). The beat runs at 4 Hz
(``publish_interval_ms`` 250, scheduled like the default 1 Hz) so that 80 periods fit in
those 20 s: a wait shows as the same 0.25 s excess over a period as at 1 Hz, without a
minute of load. Periods are taken from the module's own publication instants (its debug
log names each one on the monotonic clock; the receive instant at the test would add the
broker's and this machine's scheduling jitter). How close to its period each one stays is
a speed figure, measured by ``bench/publish_schedule.py``, not here: a loaded test
machine delays single periods by tens of milliseconds.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator, simulator_config, start_module, write_config
from lem_dcbm.harness import transaction_request as request
from tests.support.everest_peer import EverestPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

PERIOD_MS = 250
PERIOD_S = PERIOD_MS / 1000.0
LOAD_S = 20.0
# A pair takes about 2.6 s here, most of it the slowed answers: at least 5 fit in the window.
MIN_PAIRS = 5
SLOW_PATHS = ["/v1/settings", "/v1/ocmf", "/v2/ocmf"]
SLOW_MS = 500
PUBLISHED = re.compile(r"powermeter published at monotonic ([0-9.]+)")


def publish_instants(log: str) -> list[float]:
    """The monotonic instants of the module's publications, from its debug log."""
    return [float(m) for m in PUBLISHED.findall(log)]


@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[EverestPeer]:
    with EverestPeer(mosquitto.host, mosquitto.port) as started:
        yield started


def test_periods_stay_on_the_beat_while_commands_and_slow_writes_run(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker, peer: EverestPeer
) -> None:
    values = simulator_config(
        simulator, journal_dir=str(tmp_path / "journal"), publish_interval_ms=PERIOD_MS
    )
    config = write_config(tmp_path / "config.yaml", values)
    module = start_module(tmp_path, config, mosquitto.port)
    try:
        peer.wait_for_var("powermeter", 2, timeout=20)
        simulator.set_faults(latency_ms=SLOW_MS, paths=SLOW_PATHS)
        began = time.monotonic()
        pairs = 0
        while time.monotonic() - began < LOAD_S:
            transaction_id = str(uuid.uuid4())
            started = peer.call("start_transaction", {"value": request(transaction_id)}, 20)
            assert started["retval"]["status"] == "OK", started
            stopped = peer.call("stop_transaction", {"transaction_id": transaction_id}, 20)
            assert stopped["retval"]["status"] == "OK", stopped
            pairs += 1
        ended = time.monotonic()
        simulator.clear_faults()
        # Linux's monotonic clock is one for all processes: the window applies to both.
        published = [t for t in publish_instants(module.log()) if began <= t <= ended]
    finally:
        assert module.terminate() == 0, module.log()[-3000:]
    assert pairs >= MIN_PAIRS
    periods = [b - a for a, b in zip(published, published[1:], strict=False)]
    assert len(periods) >= LOAD_S / PERIOD_S - 2
    waited = [round(p, 3) for p in periods if p > PERIOD_S + SLOW_MS / 2000.0]
    assert not waited, f"the beat waited for the meter's slow answers: {waited}"
    # Scheduled on next += period: the publications keep the beat over the whole load.
    drift = (published[-1] - published[0]) - len(periods) * PERIOD_S
    assert abs(drift) < 0.1, f"the beat drifted by {drift:.3f} s in {len(periods)} periods"
