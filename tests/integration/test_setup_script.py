"""scripts/setup: pip runs only when needed, and mosquitto is found, installed or reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup"


def bash(script: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {SETUP}\n{script}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout whose venv python runs the real one but only logs ``-m pip``."""
    root = tmp_path / "checkout"
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')
    log = tmp_path / "pip.log"
    python = root / ".venv" / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> {log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    return root, log


def install(root: Path, extras: str) -> subprocess.CompletedProcess[str]:
    return bash(
        f"LEM_ROOT={root}; LEM_VENV={root}/.venv; LEM_PY={root}/.venv/bin/python\n"
        f"lem_install_project {extras}"
    )


def pip_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_pip_runs_once_until_pyproject_changes(tmp_path: Path) -> None:
    root, log = fake_checkout(tmp_path)
    assert install(root, "test").returncode == 0
    assert len(pip_calls(log)) == 1
    assert pip_calls(log)[0].endswith(f"-e {root}[test]")
    assert install(root, "test").returncode == 0
    # A test install includes everything a run install needs.
    assert install(root, "run").returncode == 0
    assert len(pip_calls(log)) == 1
    (root / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    assert install(root, "test").returncode == 0
    assert len(pip_calls(log)) == 2


def test_run_install_is_upgraded_for_tests(tmp_path: Path) -> None:
    root, log = fake_checkout(tmp_path)
    assert install(root, "run").returncode == 0
    assert pip_calls(log)[-1].endswith(f"-e {root}")
    assert install(root, "test").returncode == 0
    assert pip_calls(log)[-1].endswith(f"-e {root}[test]")


NO_MOSQUITTO = (
    "lem_find_mosquitto() { return 1; }\n"
    '_lem_install_mosquitto() { echo "install attempted" >&2; return 1; }\n'
)


def test_missing_mosquitto_fails_when_required() -> None:
    done = bash(NO_MOSQUITTO + "lem_ensure_mosquitto required")
    assert done.returncode == 1
    assert "install attempted" in done.stderr
    assert "mosquitto is required" in done.stderr


def test_missing_mosquitto_is_only_reported_when_optional() -> None:
    done = bash(NO_MOSQUITTO + 'lem_ensure_mosquitto optional && echo "[$LEM_MOSQUITTO]"')
    assert done.returncode == 0
    assert done.stdout.strip() == "[]"
    assert "not available" in done.stderr


def test_mosquitto_installed_on_demand_is_used() -> None:
    done = bash(
        "found=0\n"
        'lem_find_mosquitto() { [ "$found" = 1 ] && echo /opt/mq/mosquitto; }\n'
        "_lem_install_mosquitto() { found=1; }\n"
        'lem_ensure_mosquitto required && echo "$LEM_MOSQUITTO"'
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/opt/mq/mosquitto"


def test_unknown_mode_is_refused() -> None:
    done = subprocess.run([str(SETUP), "bogus"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown mode" in done.stderr


def test_a_python_that_does_not_run_is_refused_not_replaced(tmp_path: Path) -> None:
    # A pyenv shim of an unselected version exists but does not run; the old lookup went
    # on to python3 silently, so PYTHON=python3.10 built a venv of another version.
    shim = tmp_path / "python3.10"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.10: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    result = bash(f"PYTHON={shim} lem_find_python")
    assert result.returncode != 0
    assert result.stdout == ""
    assert f"PYTHON={shim} does not run" in result.stderr
    assert "pyenv prefix" in result.stderr


def test_pip_shows_one_line_per_package_and_its_log_on_failure(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    (root / ".venv" / "bin").mkdir(parents=True)
    python = root / ".venv" / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        "echo 'Collecting paho-mqtt<3,>=2.2 (from x)'\necho '  Downloading paho.whl'\n"
        "echo 'Installing collected packages: paho-mqtt'\necho 'ERROR: no space' >&2\nexit 1\n"
    )
    python.chmod(0o755)
    result = bash(f"LEM_VENV={root}/.venv; LEM_PY={python}\nlem_pip_install x")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "setup:   Collecting paho-mqtt<3,>=2.2" in lines
    assert not any("Downloading" in line for line in lines[:2])
    assert "ERROR: no space" in result.stderr
    assert f"pip failed (all of its output: {root}/.venv/pip.log)" in result.stderr


def test_a_bare_python3_x_name_falls_back_to_the_version_pyenv_holds(tmp_path: Path) -> None:
    # PYTHON=python3.10 ./scripts/setup, with pyenv selecting another version: its shim
    # refuses to run, the interpreter under $(pyenv root)/versions/3.10.* is taken.
    bin_dir, root = tmp_path / "bin", tmp_path / "pyenv"
    bin_dir.mkdir()
    shim = bin_dir / "python3.10"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.10: command not found' >&2\nexit 127\n")
    pyenv = bin_dir / "pyenv"
    pyenv.write_text(f'#!/bin/sh\n[ "$1" = root ] && echo {root}\n')
    held = root / "versions" / "3.10.13" / "bin"
    held.mkdir(parents=True)
    (held / "python3.10").symlink_to(sys.executable)
    for script in (shim, pyenv):
        script.chmod(0o755)
    result = bash(f"PATH={bin_dir}:/usr/bin:/bin PYTHON=python3.10 lem_find_python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(held / "python3.10")
