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
