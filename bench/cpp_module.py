"""EVerest's C++ ``LemDCBM400600`` module under its manager, measured beside lem-dcbm.

The build is the install prefix of ``build-sil.sh`` (``$LEM_DCBM_EVEREST_SIL_PREFIX``, else
the script's default ``~/.cache/everest-anchors/everest-sil/prefix``) with
``EXTRA_MODULES=LemDCBM400600``: its 2026 ``bin/manager`` and the C++ module's folder in
``libexec/everest``. One manager runs one C++ module per meter, each
module a process of its own with its own simulator; a benchmark samples each module's
process like a lem-dcbm module's and calls its commands the way EvseManager does
(``harness.Caller``). Without the build the benchmarks run lem-dcbm alone and the report
names the last C++ figures with their date.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import yaml

from lem_dcbm.harness import Broker, Simulator, wait_until
from lem_dcbm.harness.processes import log_tail

sys.path.insert(0, str(harness.ROOT))  # the real-manager tier's logging settings
from tests.real_everest.everest_run import LOGGING_INI  # noqa: E402

#: The variable naming the build's install prefix (as in tests/sil).
SIL_ENV = "LEM_DCBM_EVEREST_SIL_PREFIX"
DEFAULT_PREFIX = Path.home() / ".cache" / "everest-anchors" / "everest-sil" / "prefix"
MODULE = "LemDCBM400600"


def find_build() -> Path | str:
    """The install prefix with a manager and the C++ module, or why there is none."""
    value = os.environ.get(SIL_ENV)
    prefix = Path(value).expanduser() if value else DEFAULT_PREFIX
    manager = prefix / "bin" / "manager"
    module = prefix / "libexec" / "everest" / "modules" / MODULE / MODULE
    if not os.access(manager, os.X_OK):
        return f"no EVerest manager at {manager} (set {SIL_ENV} to a build-sil.sh prefix)"
    if not os.access(module, os.X_OK):
        return f"the build at {prefix} has no {MODULE} (build-sil.sh EXTRA_MODULES={MODULE})"
    return prefix


def module_config(sim: Simulator, tls: bool) -> dict[str, Any]:
    """The C++ module's config for ``sim`` (its manifest's keys, as lem-dcbm reads them)."""
    values: dict[str, Any] = {"ip_address": sim.host, "port": sim.port}
    if tls:
        values["meter_tls_certificate"] = sim.cert_path.read_text()
    return values


@dataclass
class CppManager:
    """One manager running the C++ module once per meter, on ``broker``."""

    prefix: Path
    workdir: Path
    broker: Broker
    #: Module id -> (its simulator, TLS or not).
    meters: dict[str, tuple[Simulator, bool]]
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        """The manager's output, with every module's log lines."""
        return self.workdir / "manager.log"

    def start(self) -> CppManager:
        """Write the config and start the manager in a session of its own."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logging.ini").write_text(LOGGING_INI)
        document = {
            "settings": {
                "mqtt_broker_host": self.broker.host,
                "mqtt_broker_port": self.broker.port,
                "modules_dir": str(self.prefix / "libexec" / "everest" / "modules"),
                "logging_config_file": str(self.workdir / "logging.ini"),
            },
            "active_modules": {
                module_id: {"module": MODULE, "config_module": module_config(sim, tls)}
                for module_id, (sim, tls) in self.meters.items()
            },
        }
        config = self.workdir / "config.yaml"
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        argv = [str(self.prefix / "bin" / "manager"), "--prefix", str(self.prefix)]
        argv += ["--config", str(config)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        return self

    def pids(self, timeout_s: float = 60.0) -> dict[str, int]:
        """The process id of each module, once the manager has started all of them."""

        def found() -> dict[str, int] | None:
            if self.process is None or self.process.poll() is not None:
                raise harness.BenchError(f"the manager ended; {self.tail()}")
            pids = self._module_pids()
            return pids if set(pids) == set(self.meters) else None

        return wait_until(found, timeout_s, interval=0.2, what=f"{len(self.meters)} C++ modules")

    def _module_pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [word.decode(errors="replace") for word in argv]
            # The manager names the process "<module id>:LemDCBM400600"; a binary started
            # by its path, or a script an interpreter runs, ends in "/LemDCBM400600".
            if not any(word.endswith((f"/{MODULE}", f":{MODULE}")) for word in words[:2]):
                continue
            for module_id in self.meters:
                if module_id in words or any(w.endswith(f"={module_id}") for w in words):
                    pids[module_id] = int(entry.name)
        return pids

    def tail(self, lines: int = 30) -> str:
        """The end of the manager's log."""
        return "manager log:\n" + log_tail(self.log_path, lines)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT to the manager, then SIGTERM and SIGKILL to its session if it stays."""
        process, self.process = self.process, None
        if process is None:
            return
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout_s if signum == signal.SIGINT else 10)
                break
            except subprocess.TimeoutExpired:
                continue
        # A module the manager left behind still belongs to the session it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
