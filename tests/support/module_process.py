"""The module as a separate process, the way a charger runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.simulator import Simulator

ROOT = Path(__file__).resolve().parents[2]
MODULE_ID = "powermeter_1"


def simulator_config(sim: Simulator, **overrides: Any) -> dict[str, Any]:
    """Config values for a module talking to ``sim`` (quick retries, short timeouts)."""
    values: dict[str, Any] = {
        "ip_address": sim.host,
        "port": sim.port,
        "resilience_initial_connection_retries": 3,
        "resilience_initial_connection_retry_delay": 1000,
        "resilience_transaction_request_retry_delay": 100,
        "command_timeout_ms": 2000,
    }
    if sim.tls and sim.cert_path is not None:
        values["meter_tls_certificate"] = sim.cert_path.read_text()
    values.update(overrides)
    return values


def write_config(path: Path, values: dict[str, Any], module_id: str = MODULE_ID) -> Path:
    """Write an EVerest config file with one LemDCBM400600 module."""
    document = {"active_modules": {module_id: {"module": "LemDCBM400600", "config_module": values}}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class ModuleProcess:
    """A running ``lem-dcbm run`` (or ``module.py``) with its log in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)

    def log(self) -> str:
        """Everything the module logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"module did not exit within {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)


def module_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a module process: no inherited EV_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EV_")}
    env["LEM_DCBM_LOG_LEVEL"] = "DEBUG"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_module(
    workdir: Path,
    config_path: Path | None,
    broker_port: int,
    *,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    entry: str = "cli",
) -> ModuleProcess:
    """Start the module; ``entry`` is ``cli`` (python -m lem_dcbm run) or ``module.py``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"module-{len(list(workdir.glob('module-*.log')))}.log"
    if entry == "module.py":
        argv = [sys.executable, str(ROOT / "module.py")]
    else:
        argv = [sys.executable, "-m", "lem_dcbm", "run"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
        argv += ["--broker-host", "127.0.0.1", "--broker-port", str(broker_port)]
    argv += extra_args or []
    full_env = module_env(env)
    full_env.setdefault("LEM_DCBM_HEALTH_FILE", str(workdir / "health"))
    # Each test keeps its journal in its own directory unless the config names one.
    full_env.setdefault("LEM_DCBM_STATE_DIR", str(workdir / "state"))
    with open(log_path, "wb") as log:
        # The child keeps its own copy of the descriptor.
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=workdir
        )
    return ModuleProcess(process, log_path, argv)


def run_to_exit(argv: list[str], timeout: float = 20.0, cwd: Path | None = None) -> tuple[int, str]:
    """Run a command to its end; return (exit code, stderr)."""
    done = subprocess.run(
        argv, capture_output=True, timeout=timeout, env=module_env(), cwd=cwd, check=False
    )
    return done.returncode, done.stderr.decode(errors="replace")
