"""The demo runs unattended and ends with a verified signed record."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lem_dcbm.demo import MIN_TRANSACTION_ENV
from lem_dcbm.harness import ROOT, module_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_ends_with_a_verified_record(broker: str) -> None:
    if broker == "embedded":
        pytest.importorskip("amqtt", reason="the embedded broker is the demo's fallback")
    # The transaction lasts the simulated minimum (5 s in the demo as shipped): 1 s here,
    # as the record's check does not depend on it.
    env = module_env({"LEM_DEMO_BROKER": broker, MIN_TRANSACTION_ENV: "1"})
    done = subprocess.run(
        [sys.executable, "-m", "lem_dcbm.demo"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "signature verifies with public_key_ocmf: yes" in done.stdout
    assert "OCMF|" in done.stdout
    if broker == "embedded":
        assert "amqtt" in done.stdout


def test_sigterm_stops_the_demo_its_processes_and_removes_its_folder(tmp_path: Path) -> None:
    # `timeout 8 ./scripts/demo` used to leave the module running for seconds and the
    # demo's temporary folder behind: SIGTERM killed the Python before its clean-up.
    env = module_env({"TMPDIR": str(tmp_path)})
    demo = subprocess.Popen(
        [sys.executable, "-m", "lem_dcbm.demo"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert demo.stdout is not None
    lines = []
    try:
        for line in demo.stdout:
            lines.append(line)
            started = re.search(r"module \S+ started \(pid (\d+)\)", line)
            if started:
                break
        assert started, "".join(lines)
        module_pid = int(started.group(1))
        assert list(tmp_path.glob("lem-dcbm-demo-*"))
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "terminated (SIGTERM); everything started was stopped" in rest
    assert not pid_alive(module_pid), "the module outlived the demo"
    assert list(tmp_path.glob("lem-dcbm-demo-*")) == []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped by its parent, which is gone) counts as stopped.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][:1] != "Z"
