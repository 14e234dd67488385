"""Delays every ``os.fsync`` of files under one directory, in the process that imports it.

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry holding
one; ``bench/endurance_fsync.py`` puts this directory first on the module's
``PYTHONPATH``. Set ``LEM_BENCH_FSYNC_DELAY_S`` (seconds), ``LEM_BENCH_FSYNC_UNDER`` (a
path prefix: only fsyncs of files or directories below it are delayed) and
``LEM_BENCH_FSYNC_LOG`` (a file that gets one line ``<monotonic end> <path>`` per delayed
fsync, for counting them per command). The real fsync runs first, then a sleep for the
rest of the delay, so each such fsync takes the delay in all: on eMMC the cost sits in
the flush the fsync waits for, and ``write`` returns at once.
"""

from __future__ import annotations

import os
import time

_DELAY_S = float(os.environ.get("LEM_BENCH_FSYNC_DELAY_S", "0") or 0)
_UNDER = os.environ.get("LEM_BENCH_FSYNC_UNDER", "")
_LOG = os.environ.get("LEM_BENCH_FSYNC_LOG", "")

if _DELAY_S > 0 and _UNDER:
    _real_fsync = os.fsync

    def _slow_fsync(fd: object) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()  # type: ignore[attr-defined]
        try:
            path = os.readlink(f"/proc/self/fd/{number}")
        except OSError:
            path = ""
        began = time.monotonic()
        _real_fsync(number)
        if path.startswith(_UNDER):
            # Each fsync takes the delay in all (or longer, if the real disk is slower).
            time.sleep(max(0.0, _DELAY_S - (time.monotonic() - began)))
            if _LOG:
                line = f"{time.monotonic():.6f} {path}\n".encode()
                descriptor = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(descriptor, line)
                finally:
                    os.close(descriptor)

    os.fsync = _slow_fsync
