"""Every Python the project claims, from a fresh copy of the checkout: scripts/setup, the
import of every module, and the offline module-folder install from a wheelhouse built for
that Python; the demo on the oldest.

Minutes, not seconds: not part of the suite (``-m "not smoke"`` in pytest's addopts);
``scripts/python-smoke`` runs it, and CI runs that after the suite. A version without an
interpreter on this machine is skipped with one line saying so.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# Each test installs twice and builds a wheelhouse: minutes on a busy machine.
pytestmark = [pytest.mark.smoke, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")

#: Imports every module of the package (``__main__`` modules run on import); prints the count.
IMPORT_ALL = """
import importlib, pkgutil, sys, lem_dcbm
names = ["lem_dcbm"] + [
    m.name for m in pkgutil.walk_packages(lem_dcbm.__path__, "lem_dcbm.")
    if not m.name.endswith(".__main__")
]
for name in names:
    importlib.import_module(name)
print("%d.%d" % sys.version_info[:2], len(names))
"""

#: The environment of every step, without a PYTHON the caller chose (CI picks one for
#: its suite): each step names the interpreter it is about, or takes the default.
_ENV = {name: value for name, value in os.environ.items() if name != "PYTHON"}


def supported_pythons() -> list[str]:
    """The ``3.X`` versions pyproject.toml's classifiers name, oldest first."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [
        m.group(1)
        for c in project["classifiers"]
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))
    ]
    return sorted(found, key=lambda v: int(v.split(".")[1]))


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` that runs: on PATH, or one pyenv holds."""
    candidates = [shutil.which(f"python{version}") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with the end of its output unless it succeeds."""
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{output[-3000:]}"
    return output


def fresh_copy(into: Path) -> Path:
    """The checkout's files as a clone would have them (tracked and new, never .venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


@pytest.mark.parametrize("version", supported_pythons())
def test_fresh_clone_installs_and_imports(version: str, tmp_path: Path) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (PATH or pyenv)")
    clone = fresh_copy(tmp_path / "clone")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # scripts/setup as docs/install.md says (PYTHON=python3.X where that name is on PATH,
    # a pyenv shim included), then every module imported from the venv.
    named = f"python{version}" if shutil.which(f"python{version}") else python
    output = run(["./scripts/setup", "run"], clone, env={**_ENV, "PYTHON": named})
    assert f"ready: {clone}/.venv/bin/python" in output
    imported = run([clone / ".venv/bin/python", "-I", "-c", IMPORT_ALL], elsewhere)
    assert imported.split()[0] == version
    check = [clone / "config" / "real-meter.yaml", "--check"]
    state = {**_ENV, "LEM_DCBM_STATE_DIR": str(tmp_path / "state")}
    lem_dcbm = clone / ".venv" / "bin" / "lem-dcbm"
    assert "is valid" in run([lem_dcbm, "run", "--config", *check], clone, state)

    # The offline route into an EVerest module folder: a wheelhouse for this Python, a
    # venv in the folder, module.py and manifest.yaml from the wheelhouse, no index.
    house, folder = tmp_path / "wheelhouse", tmp_path / "modules" / "LemDCBM400600Py"
    run(["./scripts/wheelhouse", house], clone, env={**_ENV, "LEM_WHEEL_PYTHON": version})
    folder.mkdir(parents=True)
    offline = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    run([python, "-m", "venv", folder / ".venv"], elsewhere, offline)
    pip = [folder / ".venv/bin/python", "-m", "pip", "install", "-q", "--no-index"]
    constraints = ["--constraint", house / "constraints.txt"]
    run([*pip, "--find-links", house, *constraints, "lem-dcbm"], elsewhere, offline)
    for name in ("module.py", "manifest.yaml"):
        shutil.copy2(house / name, folder / name)
    assert run([folder / ".venv/bin/python", "-I", "-c", IMPORT_ALL], elsewhere, offline)
    state = {**offline, "LEM_DCBM_STATE_DIR": str(tmp_path / "state")}
    module = [folder / ".venv/bin/python", folder / "module.py", "--config", *check]
    assert "is valid" in run(module, elsewhere, state)

    if version == supported_pythons()[0]:
        # The demo on the oldest: broker, simulator, module and one signed transaction.
        assert "demo: done" in run(["./scripts/demo"], clone)
