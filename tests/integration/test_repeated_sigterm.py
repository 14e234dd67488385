"""SIGTERM after SIGTERM, as a dying 0.25 manager sends them: the module still exits 0.

The 0.25 manager makes SIGTERM its modules' parent-death signal. Linux sends it each time
a module is handed to a new parent, and a dying multi-threaded manager hands its children
from thread to thread before init (or a subreaper) gets them: one module can get several
SIGTERMs, the last ones while the interpreter already exits. Seen under the real manager
(tests/real_everest) as exit status -15 after a clean stop.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator, simulator_config, start_module, write_config
from tests.support.everest_peer import EverestPeer

pytestmark = pytest.mark.integration


def test_a_burst_of_sigterms_ends_the_module_with_exit_code_0(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> None:
    values = simulator_config(simulator, journal_dir=str(tmp_path / "journal"))
    config = write_config(tmp_path / "config.yaml", values)
    with EverestPeer(mosquitto.host, mosquitto.port) as peer:
        module = start_module(tmp_path, config, mosquitto.port, log_level="INFO")
        try:
            peer.wait_for_var("powermeter", 1, timeout=20)
            # SIGTERM again and again until the process is gone: every stage of its exit
            # (the stop, the threads' end, the interpreter's finalisation) gets some.
            sent = 0
            deadline = time.monotonic() + 10
            while module.process.poll() is None and time.monotonic() < deadline:
                try:
                    os.kill(module.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
                sent += 1
                time.sleep(0.001)
            code = module.process.wait(5)
            assert code == 0, f"exit {code} after {sent} SIGTERMs; {module.log()[-2000:]}"
            assert "Traceback" not in module.log(), module.log()
        finally:
            module.kill()
