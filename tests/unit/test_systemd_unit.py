"""The systemd unit of the standalone mode: valid for systemd, hardened, and its command runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "systemd" / "lem-dcbm@.service"
INSTALLED = "/opt/lem-dcbm/.venv/bin/lem-dcbm"
#: This test's own ``lem-dcbm`` stands in for the installed one.
LEM_DCBM = str(Path(sys.executable).with_name("lem-dcbm"))


def settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if re.match(r"^[A-Za-z]+=", line):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def instance_unit(tmp_path: Path) -> Path:
    """The unit with this test's ``lem-dcbm``, for ``powermeter_1``."""
    folder = tmp_path / "units"
    folder.mkdir()
    (folder / UNIT.name).write_text(UNIT.read_text().replace(INSTALLED, LEM_DCBM))
    return folder / "lem-dcbm@powermeter_1.service"


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze`` with ``args``; the test is skipped where there is none."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    result = analyze("verify", str(instance_unit(tmp_path)))

    # Unknown or misspelt keys are only warnings: the output must be empty too.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    # 2.0 of 10 at most: systemd calls up to 2.0 "OK", the best of its four grades.
    result = analyze("security", "--offline=true", "--threshold=20", str(instance_unit(tmp_path)))

    assert result.returncode == 0, result.stdout[-2000:]
    assert "Overall exposure level" in result.stdout


def test_journal_in_the_state_directory_and_the_instance_is_the_module_id() -> None:
    unit = settings(UNIT.read_text())

    assert unit["StateDirectory"] == ["lem-dcbm"]
    assert (unit["DynamicUser"], unit["User"]) == (["yes"], ["lem-dcbm"])
    assert "LEM_DCBM_STATE_DIR=%S/lem-dcbm" in unit["Environment"]
    assert unit["ExecStart"] == [
        f"{INSTALLED} run --config /etc/lem-dcbm/config.yaml --module-id %i"
    ]
    assert unit["RestartPreventExitStatus"] == ["2"]


def test_the_units_command_line_runs_as_systemd_would_start_it(tmp_path: Path) -> None:
    unit = settings(UNIT.read_text())
    state, runtime = tmp_path / "state", tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(
        "active_modules:\n  powermeter_1:\n    module: LemDCBM400600Py\n"
        "    config_module:\n      ip_address: 192.168.10.20\n"
    )

    def expand(value: str) -> str:
        return (
            value.replace("%i", "powermeter_1")
            .replace("%S", str(state))
            .replace("%t", str(runtime))
        )

    env = {"PATH": "/usr/bin:/bin", "EV_MQTT_BROKER_HOST": "broker.local"}
    for value in unit["Environment"]:
        key, _, setting = expand(value).partition("=")
        env[key] = setting
    command = expand(unit["ExecStart"][0]).replace(INSTALLED, LEM_DCBM)
    command = command.replace("/etc/lem-dcbm/config.yaml", str(config))

    result = subprocess.run(
        [*command.split(), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "lem-dcbm: config of powermeter_1 is valid; broker broker.local:1883, prefix everest/; "
        f"journal {state}/lem-dcbm/powermeter_1; "
        f"heartbeat {runtime}/lem-dcbm/powermeter_1.heartbeat\n"
    )
