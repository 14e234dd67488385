"""``ProcessGroup``: the brokers, simulators and modules of one run, stopped together."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Protocol

from lem_dcbm.harness.broker import Broker
from lem_dcbm.harness.module_process import ModuleProcess, start_module
from lem_dcbm.harness.processes import STOP_TIMEOUT_S, stop_processes
from lem_dcbm.harness.simulator import Simulator, start_simulator


class _Child(Protocol):
    process: Any

    def stop(self) -> None: ...


class ProcessGroup:
    """Everything started for one run (demo, benchmark) in ``workdir``.

    ``close`` (or leaving the ``with`` block) stops every process still running: all get
    SIGTERM at once, newest first, and what has not exited after ``STOP_TIMEOUT_S``
    gets SIGKILL, so a group of fifty modules stops in seconds, not minutes.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._children: list[_Child] = []
        #: The modules started so far, oldest first.
        self.modules: list[ModuleProcess] = []

    def broker(self, **options: Any) -> Broker:
        """Start a broker (options as for ``Broker``) and wait until it listens."""
        broker = Broker(self.workdir, **options)
        self._children.append(broker)
        return broker.start()

    def simulator(self, name: str = "simulator", *, wait: bool = True, **options: Any) -> Simulator:
        """Start a simulator in ``workdir/name`` (options as for ``start_simulator``).

        With ``wait`` False it is only launched: start several, then ``wait_listening``.
        """
        sim = start_simulator(self.workdir / name, wait=False, **options)
        self._children.append(sim)
        return sim.wait_listening() if wait else sim

    def module(
        self, name: str, config_path: Path | None, broker: Broker, **options: Any
    ) -> ModuleProcess:
        """Start a module in ``workdir/name`` (options as for ``start_module``)."""
        module = start_module(
            self.workdir / name, config_path, broker.port, broker_host=broker.host, **options
        )
        self._children.append(module)
        self.modules.append(module)
        return module

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every child process, newest first."""
        children = list(reversed(self._children))
        self._children.clear()
        running: list[subprocess.Popen[Any]] = [c.process for c in children if c.process]
        stop_processes(running, timeout_s)
        for child in children:
            child.stop()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
