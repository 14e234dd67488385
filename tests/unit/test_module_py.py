"""``python3 module.py`` without its dependencies: one line saying how to install, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--config", "config/simulator.yaml"], {}),
        ([], {"EV_MODULE": "powermeter_1"}),
    ],
)
def test_module_py_without_its_dependencies_says_how_to_install(
    argv: list[str], env: dict[str, str]
) -> None:
    # -S: no site-packages, as a system python3 without the module's venv; -I: no PYTHON*.
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(ROOT / "module.py"), *argv],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{sys.executable} has no PyYAML (import 'yaml')" in lines[0]
    assert str(ROOT / ".venv") in lines[0]
    assert "docs/install.md" in lines[0]


def test_module_py_without_the_package_says_how_to_install(tmp_path: Path) -> None:
    # A module folder holding module.py (from a wheelhouse) and no lem-dcbm yet: the old
    # hint covered only the dependencies, and this ended in a traceback.
    folder = tmp_path / "LemDCBM400600Py"
    folder.mkdir()
    (folder / "module.py").write_bytes((ROOT / "module.py").read_bytes())
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(folder / "module.py"), "--check"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert f"{sys.executable} has no lem-dcbm (import 'lem_dcbm')" in line
    assert f"{folder / '.venv/bin/pip'} install --constraint constraints.txt" in line
    assert "--find-links <wheelhouse> lem-dcbm" in line
