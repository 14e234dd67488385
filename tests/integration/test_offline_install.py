"""The offline route: a wheelhouse built here installs into a fresh venv with no index.

That venv holds lem-dcbm and its declared runtime dependencies only, so importing every
module of the package there also shows that it imports nothing else; the module installed
there then serves the simulated meter until SIGTERM.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    ModuleProcess,
    Simulator,
    simulator_config,
    write_config,
)
from lem_dcbm.harness.processes import spawn
from tests.support.constraints import pinned_version, pins, runtime_closure

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Imports every module of the installed package (``__main__`` modules run on import).
IMPORT_ALL = """
import importlib, pkgutil, lem_dcbm
names = ["lem_dcbm"] + [
    m.name for m in pkgutil.walk_packages(lem_dcbm.__path__, "lem_dcbm.")
    if not m.name.endswith(".__main__")
]
for name in names:
    importlib.import_module(name)
print(lem_dcbm.__file__)
print(len(names))
"""


def package_modules() -> list[str]:
    """The modules of the checkout's package, as IMPORT_ALL finds them in the venv."""
    import lem_dcbm

    return [
        m.name
        for m in pkgutil.walk_packages(lem_dcbm.__path__, "lem_dcbm.")
        if not m.name.endswith(".__main__")
    ] + ["lem_dcbm"]


def run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    """Run a command, fail the test with its output unless it succeeds; return stdout."""
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def wheel_pins() -> dict[str, str]:
    """``name: version`` of each pin this Python needs, names as wheel files spell them.

    A pin only older Pythons need (typing-extensions before 3.13) is left out here.
    """
    python = ".".join(map(str, sys.version_info[:2]))
    needed = runtime_closure("lem-dcbm", python)
    return {
        re.sub(r"-", "_", name): pinned_version(pin)
        for name, pin in pins().items()
        if name in needed
    }


def test_wheelhouse_installs_offline_and_every_module_imports(
    tmp_path: Path, mosquitto: Broker, simulator: Simulator
) -> None:
    house, venv, elsewhere = tmp_path / "wheelhouse", tmp_path / "venv", tmp_path / "cwd"
    elsewhere.mkdir()
    run(ROOT / "scripts" / "wheelhouse", house, env={**os.environ, "PYTHON": sys.executable})

    # Complete and exact: a wheel for every pin of constraints.txt at its version, no other.
    wheels = {
        re.sub(r"[-_.]+", "_", w.name.split("-")[0]).lower(): w.name.split("-")[1]
        for w in house.glob("*.whl")
    }
    assert (
        wheels.pop("lem_dcbm")
        == run(sys.executable, "-c", "import lem_dcbm; print(lem_dcbm.__version__)").strip()
    )
    assert wheels == wheel_pins()
    # The module folder's own files, for an offline install into an EVerest module folder.
    for name in ("module.py", "manifest.yaml"):
        assert (house / name).read_bytes() == (ROOT / name).read_bytes(), name

    # The charger: no index, no pip configuration of this machine, only the wheelhouse.
    offline = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    run(sys.executable, "-m", "venv", venv, env=offline)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--find-links",
        house,
        "--constraint",
        house / "constraints.txt",
        "lem-dcbm",
        env=offline,
    )
    run(python, "-m", "pip", "check", env=offline)

    installed = run(python, "-m", "pip", "list", "--format=freeze", env=offline).split()
    names = {re.sub(r"[-_.]+", "_", line.split("==")[0]).lower() for line in installed}
    assert names - {"pip", "setuptools"} == set(wheel_pins()) | {"lem_dcbm"}

    # -I: neither the checkout (working directory) nor PYTHON* variables can stand in.
    imported = run(python, "-I", "-c", IMPORT_ALL, env=offline, cwd=elsewhere).split()
    assert Path(imported[0]).is_relative_to(venv)
    assert int(imported[1]) == len(package_modules())

    assert "usage: lem-dcbm" in run(bin_dir / "lem-dcbm", "--help", env=offline, cwd=elsewhere)
    checked = run(
        bin_dir / "lem-dcbm",
        "run",
        "--config",
        ROOT / "config" / "real-meter.yaml",
        "--check",
        env={**offline, "LEM_DCBM_STATE_DIR": str(tmp_path / "state")},
        cwd=elsewhere,
    )
    assert checked.startswith("lem-dcbm: config of powermeter_1 is valid; broker localhost:1883")

    # And it runs: the offline install serves a meter until SIGTERM, then exits 0.
    config = write_config(tmp_path / "module" / "config.yaml", simulator_config(simulator))
    heartbeat = tmp_path / "module" / "health" / f"{MODULE_ID}.heartbeat"
    argv = [
        str(bin_dir / "lem-dcbm"),
        "run",
        "--config",
        str(config),
        "--broker-host",
        mosquitto.host,
        "--broker-port",
        str(mosquitto.port),
    ]
    env = {
        **offline,
        "LEM_DCBM_HEALTH_DIR": str(heartbeat.parent),
        "LEM_DCBM_STATE_DIR": str(tmp_path / "state"),
    }
    log = tmp_path / "module" / "module.log"
    module = ModuleProcess(spawn(argv, log, env=env, cwd=elsewhere), log, argv, 0.0, heartbeat)
    try:
        module.wait_ready()
    finally:
        assert module.terminate() == 0, module.log()
