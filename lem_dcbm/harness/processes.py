"""Starting a child process with its output in a log file, and stopping children."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: How long a child has to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


def spawn(
    argv: Sequence[str], log_path: Path, *, pipe_stdout: bool = False, **popen: Any
) -> subprocess.Popen[Any]:
    """Start ``argv`` with stderr, and stdout unless ``pipe_stdout``, appended to ``log_path``."""
    with open(log_path, "ab") as log:
        # The child keeps its own copy of the descriptor.
        stdout: Any = subprocess.PIPE if pipe_stdout else log
        return subprocess.Popen(list(argv), stdout=stdout, stderr=log, **popen)


def stop_processes(
    processes: Sequence[subprocess.Popen[str] | subprocess.Popen[bytes]],
    timeout_s: float = STOP_TIMEOUT_S,
) -> None:
    """SIGTERM every process first, then wait for all within ``timeout_s``; kill the rest."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" when there is none yet)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
