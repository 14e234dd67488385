"""The module as a separate process, the way a charger runs it, with its log in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lem_dcbm import MODULE_NAME
from lem_dcbm.harness.processes import STOP_TIMEOUT_S, log_tail, spawn, stop_processes
from lem_dcbm.harness.simulator import Simulator
from lem_dcbm.harness.waiting import HarnessError, wait_until
from lem_dcbm.health import HEALTH_DIR_ENV, health_file_path
from lem_dcbm.json_types import JsonObject

#: The checkout: ``module.py`` (the manager's entry point) lives there.
ROOT = Path(__file__).resolve().parents[2]
MODULE_ID = "powermeter_1"

Entry = Literal["cli", "module.py"]


def simulator_config(sim: Simulator, **overrides: object) -> JsonObject:
    """Config values for a module talking to ``sim`` (quick retries, short timeouts)."""
    values: dict[str, Any] = {
        "ip_address": sim.host,
        "port": sim.port,
        "resilience_initial_connection_retries": 3,
        "resilience_initial_connection_retry_delay": 1000,
        "resilience_transaction_request_retry_delay": 100,
        "command_timeout_ms": 2000,
    }
    if sim.tls:
        values["meter_tls_certificate"] = sim.cert_path.read_text()
    values.update(overrides)
    return values


def write_config(path: Path, values: Mapping[str, object], module_id: str = MODULE_ID) -> Path:
    """Write an EVerest config file with one lem-dcbm module."""
    document = {
        "active_modules": {module_id: {"module": MODULE_NAME, "config_module": dict(values)}}
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def module_env(
    extra: Mapping[str, str] | None = None, *, log_level: str | None = "DEBUG"
) -> dict[str, str]:
    """This process's environment without ``EV_*`` variables, at ``log_level`` (None: as is)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EV_")}
    if log_level:
        env["LEM_DCBM_LOG_LEVEL"] = log_level
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class ModuleProcess:
    """A running ``lem-dcbm run`` (or ``module.py``) with its log in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    #: Monotonic time just before the process was started.
    started_at: float = 0.0
    #: The heartbeat file the module touches once a second while it is ready.
    health_path: Path | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log(self) -> str:
        """Everything the module logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the module's log."""
        return log_tail(self.log_path, lines)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait for the first heartbeat; fail at once, with the log, when the module exits."""
        health = self.health_path
        if health is None:
            raise HarnessError("this module has no heartbeat file to wait on")

        def ready() -> bool:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"the module exited with code {self.process.returncode}; log:\n"
                    + self.log_tail()
                )
            # A beat dated 1970 means "running, no answer from the meter yet".
            return health.exists() and health.stat().st_mtime > 0

        wait_until(ready, timeout_s, interval=0.05, what="the module's first heartbeat")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and return the exit code; kill and raise when it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise HarnessError(f"module did not exit within {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, and SIGKILL when it does not exit within ``timeout_s``; never raises."""
        stop_processes([self.process], timeout_s)

    def __enter__(self) -> ModuleProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_module(
    workdir: Path,
    config_path: Path | None,
    broker_port: int,
    *,
    broker_host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    entry: Entry = "cli",
    log_level: str | None = "DEBUG",
    module_id: str = MODULE_ID,
) -> ModuleProcess:
    """Start the module in ``workdir`` (its log, heartbeat and journal go there).

    ``entry`` is ``cli`` (python -m lem_dcbm run) or ``module.py`` (as the manager starts
    it, with ``config_path`` None). The log is at DEBUG unless ``log_level`` says
    otherwise (None: the module's default). ``module_id`` names the heartbeat to wait on.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"module-{len(list(workdir.glob('module-*.log')))}.log"
    if entry == "module.py":
        argv = [sys.executable, str(ROOT / "module.py")]
    else:
        argv = [sys.executable, "-m", "lem_dcbm", "run"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
        argv += ["--broker-host", broker_host, "--broker-port", str(broker_port)]
    argv += extra_args
    full_env = module_env(env, log_level=log_level)
    full_env.setdefault(HEALTH_DIR_ENV, str(workdir / "health"))
    health_path = health_file_path(module_id, full_env)
    # Each run keeps its journal in its own directory unless the config names one.
    full_env.setdefault("LEM_DCBM_STATE_DIR", str(workdir / "state"))
    started_at = time.monotonic()
    process = spawn(argv, log_path, env=full_env, cwd=workdir)
    return ModuleProcess(process, log_path, argv, started_at, health_path)


def run_to_exit(
    argv: Sequence[str], timeout: float = 20.0, cwd: Path | None = None
) -> tuple[int, str]:
    """Run a command in the modules' environment to its end; return (exit code, stderr)."""
    done = subprocess.run(
        list(argv), capture_output=True, timeout=timeout, env=module_env(), cwd=cwd, check=False
    )
    return done.returncode, done.stderr.decode(errors="replace")
