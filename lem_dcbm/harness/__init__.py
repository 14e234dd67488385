"""Real processes for tests, benchmarks and the demo: broker, meter simulator and module.

Each piece starts on a free port, waits for readiness against a deadline (never a
fixed sleep) and stops what it started, as a context manager or through ``stop``:

- ``Broker``: mosquitto (found on PATH or in the usual sbin folders), or amqtt;
- ``Simulator`` / ``start_simulator``: ``python -m lem_dcbm.simulator`` and its
  ``/_sim/`` control API, over HTTP or pinned HTTPS;
- ``ModuleProcess`` / ``start_module``: ``lem-dcbm run`` or ``module.py`` with its log;
- ``ProcessGroup``: all of one run, stopped together.
"""

from __future__ import annotations

from lem_dcbm.harness.broker import Broker, find_mosquitto, mosquitto_binary
from lem_dcbm.harness.group import ProcessGroup
from lem_dcbm.harness.module_process import (
    MODULE_ID,
    ROOT,
    ModuleProcess,
    module_env,
    run_to_exit,
    simulator_config,
    start_module,
    write_config,
)
from lem_dcbm.harness.simulator import (
    Simulator,
    SimulatorControlError,
    pinned_context,
    start_simulator,
)
from lem_dcbm.harness.transaction import transaction_request
from lem_dcbm.harness.waiting import HarnessError, free_port, port_open, wait_until

__all__ = [
    "MODULE_ID",
    "ROOT",
    "Broker",
    "HarnessError",
    "ModuleProcess",
    "ProcessGroup",
    "Simulator",
    "SimulatorControlError",
    "find_mosquitto",
    "free_port",
    "module_env",
    "mosquitto_binary",
    "pinned_context",
    "port_open",
    "run_to_exit",
    "simulator_config",
    "start_module",
    "start_simulator",
    "wait_until",
    "transaction_request",
    "write_config",
]
