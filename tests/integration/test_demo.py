"""The demo runs unattended and ends with a verified signed record."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lem_dcbm.harness import ROOT, module_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_ends_with_a_verified_record(broker: str) -> None:
    if broker == "embedded":
        pytest.importorskip("amqtt", reason="the embedded broker is the demo's fallback")
    env = module_env({"LEM_DEMO_BROKER": broker})
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
