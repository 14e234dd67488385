"""The ``lem-dcbm`` command as a process: one parser, and ``run`` loads only what it needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator, simulator_config, start_module, write_config

pytestmark = pytest.mark.integration

#: What ``run`` in the module protocol never needs: the API mode's adapter and its parts
#: (only its switch, ``everest_api.mode``, is read), the tools, the simulator, the
#: meter probes that only a failed request calls for, jsonschema (valid values are
#: judged by ``schema_check``), cryptography (records are verified by ``lem_dcbm.p256``)
#: and, without a transaction, that verifier itself; urllib3 (the meter transport is on
#: ``http.client``), difflib (a config mistake's hint), subprocess (no child processes:
#: the kernel's clock is asked without ``ctypes.util``), strptime's module (a
#: publication's time stamp is checked without it) and importlib.resources with zipfile
#: (package files are read from the package's directory).
NOT_FOR_THE_MODULE_PROTOCOL = (
    "lem_dcbm.everest_api.",
    "lem_dcbm.tools",
    "lem_dcbm.simulator",
    "lem_dcbm.meter.probe",
    "jsonschema",
    "referencing",
    "cryptography",
    "lem_dcbm.p256",
    "urllib3",
    "difflib",
    "subprocess",
    "_strptime",
    "zipfile",
    "importlib.resources",
)


def test_parsing_run_loads_neither_simulator_nor_mqtt_tools() -> None:
    # The module's memory counts: the parser must not import every subcommand's code.
    probe = (
        "import sys\n"
        "from lem_dcbm.cli import build_parser\n"
        "args = build_parser().parse_args(['run', '--config', 'c.yaml'])\n"
        "assert args.handler.__name__ == 'run_command'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('lem_dcbm.simulator', "
        "'lem_dcbm.tools', 'lem_dcbm.records', 'paho'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )

    assert result.stdout.strip() == "[]"


def imported_modules(log: str) -> set[str]:
    """The modules a process imported, from its ``PYTHONPROFILEIMPORTTIME`` lines."""
    return {
        line.rpartition("|")[2].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_a_running_module_loads_no_api_mode_tool_or_probe_code(
    tmp_path: Path, mosquitto: Broker, simulator: Simulator
) -> None:
    # Each module loaded stays in memory for the life of the process (bench/analysis.md);
    # every import up to the stop counts, those made while serving included.
    config = write_config(tmp_path / "config.yaml", simulator_config(simulator))
    module = start_module(
        tmp_path, config, mosquitto.port, env={"PYTHONPROFILEIMPORTTIME": "1"}, log_level=None
    )
    try:
        module.wait_ready()
    finally:
        assert module.terminate() == 0, module.log()

    imported = imported_modules(module.log())
    assert {"lem_dcbm.service", "lem_dcbm.everest.adapter", "lem_dcbm.everest_api.mode"} <= (
        imported
    )
    unneeded = imported - {"lem_dcbm.everest_api.mode"}
    assert sorted(m for m in unneeded if m.startswith(NOT_FOR_THE_MODULE_PROTOCOL)) == []


def test_top_level_help_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lem_dcbm", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    for name in ("run", "simulate", "watch", "call", "health"):
        assert f"    {name}" in result.stdout
