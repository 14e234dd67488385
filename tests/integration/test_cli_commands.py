"""The ``lem-dcbm`` command as a process: one parser, and ``run`` loads only what it needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


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
