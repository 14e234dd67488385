"""A real EVerest manager run: a build, the installed module folders, one config, its logs.

The build comes from an environment variable per framework (see ``FRAMEWORKS``); the module
folder is installed as ``docs/install.md`` says; the manager runs below ``reaper.py`` so
that the exit status of every module is known, also on 0.25 where the manager's end
orphans them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lem_dcbm.harness import ROOT, Broker, HarnessError, Simulator, simulator_config, wait_until

HERE = Path(__file__).resolve().parent
#: Framework -> the variable naming its install prefix (``<prefix>/bin/manager``).
FRAMEWORKS = {
    "0.25": "LEM_DCBM_EVEREST_025_PREFIX",
    "2026": "LEM_DCBM_EVEREST_2026_PREFIX",
}
#: The Python everestpy was built for (the build scripts use Debian's).
PYTHON_ENV = "LEM_DCBM_EVEREST_PYTHON"
#: Another checkout of lem-dcbm to install and test instead of this one.
SOURCE_ENV = "LEM_DCBM_EVEREST_SOURCE"
#: The folder name install.md suggests; the role plays EvseManager.
MODULE_NAME = "LemDCBM400600Py"
ROLE_NAME = "EvseManagerRole"
METER_ID = "powermeter"
ROLE_ID = "evse_manager"
LOGGING_INI = """[Core]
DisableLogging=false
Filter="%Severity% >= INFO"

[Sinks.Console]
Destination=Console
Format="%TimeStamp% [%Severity%] %Message%"
Asynchronous=false
AutoFlush=true
"""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class EverestBuild:
    """One installed EVerest framework: its manager, everestpy and what it was built from."""

    framework: str
    prefix: Path

    @property
    def manager(self) -> Path:
        """``<prefix>/bin/manager``."""
        return self.prefix / "bin" / "manager"

    @property
    def everestpy(self) -> Path:
        """The folder to put on PYTHONPATH for ``import everest.framework``."""
        return self.prefix / "lib" / "everest" / "everestpy"

    def help_text(self) -> str:
        """``manager --help``."""
        done = subprocess.run(
            [str(self.manager), "--help"], capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout + done.stderr

    @property
    def graceful_shutdown(self) -> bool:
        """True when this manager has ``--graceful-shutdown`` (2026); 0.25 just ends."""
        return "--graceful-shutdown" in self.help_text()

    def origin(self) -> str:
        """What the build was made from: ``manager --version`` and the source anchor it left."""
        argv = [str(self.manager), "--version"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        version = (done.stdout + done.stderr).strip().replace(str(self.manager), "manager")
        anchors = (
            self.prefix / "share" / "everest" / ".anchor-everest",  # build-2026.sh
            self.prefix.parent / "src" / "everest-framework" / ".anchor-src",  # build-0.25.sh
        )
        for path in anchors:
            if path.exists():
                return f"{version}; {path.name}: {path.read_text().strip()}"
        return version


def module_source() -> Path:
    """The checkout the tier installs: this one, or ``$LEM_DCBM_EVEREST_SOURCE``."""
    return Path(os.environ.get(SOURCE_ENV) or ROOT).expanduser()


def find_build(framework: str) -> EverestBuild | str:
    """The build named by the framework's variable, or why there is none (a skip reason)."""
    variable = FRAMEWORKS[framework]
    value = os.environ.get(variable)
    if not value:
        return f"{variable} is not set (no EVerest {framework} build; see docs/everest-real.md)"
    build = EverestBuild(framework, Path(value).expanduser())
    if not os.access(build.manager, os.X_OK):
        return f"{variable}={value} has no bin/manager"
    return build


@dataclass
class ModuleFolders:
    """The ``modules_dir`` with lem-dcbm installed per install.md and the role beside it."""

    root: Path
    install_seconds: float


def install_module_folders(root: Path) -> ModuleFolders:
    """Install lem-dcbm as install.md says (copies, own ``.venv``, pip) and the role.

    pip installs from a copy of the checkout's package files, so that parallel workers
    never share the checkout's ``build/`` folder.
    """
    started = time.monotonic()
    checkout = module_source()
    source = root / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(checkout / name, source / name)
    shutil.copytree(
        checkout / "lem_dcbm", source / "lem_dcbm", ignore=shutil.ignore_patterns("__pycache__")
    )
    modules = root / "modules"
    folder = modules / MODULE_NAME
    folder.mkdir(parents=True)
    for name in ("manifest.yaml", "module.py"):
        shutil.copy2(checkout / name, folder / name)  # real files, not symbolic links
    venv = folder / ".venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    if (checkout / "constraints.txt").exists():  # install.md pins what the tests pass with
        pip += ["--constraint", str(checkout / "constraints.txt")]
    _run([*pip, str(source)])
    shutil.copytree(
        HERE / "modules" / ROLE_NAME,
        modules / ROLE_NAME,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return ModuleFolders(modules, time.monotonic() - started)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed: {(done.stdout + done.stderr)[-2000:]}")


@dataclass
class ManagerRun:
    """One manager with lem-dcbm (against ``simulator``) and the role, on ``broker``."""

    build: EverestBuild
    workdir: Path
    folders: ModuleFolders
    broker: Broker
    simulator: Simulator
    set_requests: list[tuple[str, str]] = field(default_factory=list)
    #: More config of the role (``remembered_transaction_id``, ``leave_running``).
    role_config: dict[str, Any] = field(default_factory=dict)
    #: The module's journal; a run after a power loss shares the first run's.
    journal_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    @property
    def config_path(self) -> Path:
        """The EVerest YAML config of this run."""
        return self.workdir / "config.yaml"

    @property
    def log_path(self) -> Path:
        """The manager's output, with every module's log lines."""
        return self.workdir / "manager.log"

    @property
    def observations_path(self) -> Path:
        """What the role saw (``tests/real_everest/modules/EvseManagerRole``)."""
        return self.workdir / "observations.json"

    @property
    def exits_path(self) -> Path:
        """The exit status of every process below the manager (``reaper.py``)."""
        return self.workdir / "exits.json"

    def write_config(self) -> None:
        """The config: settings for the broker and module folder, lem-dcbm and the role."""
        journal = self.journal_dir or self.workdir / "journal"
        meter_values = simulator_config(self.simulator, journal_dir=str(journal))
        document: dict[str, Any] = {
            "settings": {
                "mqtt_broker_host": self.broker.host,
                "mqtt_broker_port": self.broker.port,
                "modules_dir": str(self.folders.root),
                "logging_config_file": str(self.workdir / "logging.ini"),
                "validate_schema": True,
            },
            "active_modules": {
                METER_ID: {"module": MODULE_NAME, "config_module": meter_values},
                ROLE_ID: {
                    "module": ROLE_NAME,
                    "config_module": {
                        "set_requests": json.dumps(self.set_requests),
                        **self.role_config,
                    },
                    "connections": {
                        "powermeter": [{"module_id": METER_ID, "implementation_id": "main"}]
                    },
                    # The role changes the meter's configuration through the manager (2026).
                    "access": {
                        "config": {"modules": {METER_ID: {"allow_read": True, "allow_write": True}}}
                    },
                },
            },
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logging.ini").write_text(LOGGING_INI)
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def start(self) -> ManagerRun:
        """Start the manager (below the reaper) in a session of its own."""
        self.write_config()
        manager = [str(self.build.manager), "--prefix", str(self.build.prefix)]
        manager += ["--config", str(self.config_path)]
        if self.build.graceful_shutdown:
            manager.append("--graceful-shutdown")
        python = Path(os.environ.get(PYTHON_ENV, "/usr/bin/python3"))
        env = dict(os.environ)
        # The role (no .venv) runs on the Python everestpy was built for; lem-dcbm on its .venv.
        env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["LEM_REAL_OBSERVATIONS"] = str(self.observations_path)
        env["LEM_DCBM_HEALTH_FILE"] = str(self.workdir / "health")
        for variable in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(variable, None)
        argv = [sys.executable, str(HERE / "reaper.py"), str(self.exits_path), "--", *manager]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started_at = time.monotonic()
        return self

    # --- reading ------------------------------------------------------------------

    def observations(self) -> dict[str, Any]:
        """The role's observations so far ({} before its first write)."""
        try:
            data: dict[str, Any] = json.loads(self.observations_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def manager_log(self) -> str:
        """The manager's output without terminal colours."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return _ANSI.sub("", text)

    def exits(self) -> list[dict[str, Any]]:
        """Every reaped process with its exit code."""
        try:
            data: list[dict[str, Any]] = json.loads(self.exits_path.read_text())
        except (OSError, ValueError):
            return []
        return data

    def module_exit_code(self, module_name: str) -> int | None:
        """The exit code of the process that ran ``<module_name>/module.py``."""
        for entry in self.exits():
            if any(f"/{module_name}/module.py" in arg for arg in entry["argv"]):
                return int(entry["code"])
        return None

    def wait_for(self, what: str, condition: Any, timeout_s: float) -> dict[str, Any]:
        """Wait until ``condition(observations)`` holds; fail with the logs when it does not."""

        def check() -> dict[str, Any] | None:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(f"the manager ended while waiting for {what}; {self.tail()}")
            data = self.observations()
            return data if data and condition(data) else None

        try:
            return wait_until(check, timeout_s, interval=0.1, what=what)
        except HarnessError as err:
            seen = self.observations()
            raise HarnessError(f"{err}; observations {seen}; {self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        """The end of the manager's log, for failure messages."""
        return "manager log:\n" + "\n".join(self.manager_log().splitlines()[-lines:])

    # --- stopping -----------------------------------------------------------------

    def shutdown(self, timeout_s: float = 30.0) -> int:
        """SIGINT to the manager (graceful on 2026, the end of everything on 0.25); its code."""
        process = self.process
        if process is None:
            raise HarnessError("the manager was not started")
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"the manager did not end within {timeout_s:g} s") from None

    def power_loss(self) -> None:
        """SIGKILL to the manager, its modules and the reaper at once: the charger loses power."""
        process = self.process
        if process is None:
            raise HarnessError("the manager was not started")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        self.process = None

    def kill(self) -> None:
        """End the whole session (reaper, manager, modules) after a failure."""
        process, self.process = self.process, None
        if process is not None:
            end_process_group(process)


def end_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, to the session ``process`` leads (started with a new session)."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(10)
            break
        except subprocess.TimeoutExpired:
            continue
