"""Running ``lem-dcbm`` in the test process: the CLI's behaviour without a process start."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import pytest

from lem_dcbm.cli import main


@dataclass(frozen=True)
class CliResult:
    """What a command printed and its exit code, like ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch | None = None,
    stdin: str = "",
) -> CliResult:
    """Run ``lem-dcbm argv`` through its one parser; argparse's exits become exit codes."""
    capsys.readouterr()  # drop what the test printed before
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 2
    out, err = capsys.readouterr()
    return CliResult(code, out, err)
