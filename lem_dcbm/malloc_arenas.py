"""One malloc arena for the process instead of one per thread.

glibc's malloc gives each thread that allocates an arena of its own (up to eight per
core), and memory freed in one arena serves no other. A module's threads (MQTT network
loops, the ready loop, the command worker, the deadline watchdog) mostly wait and
allocate little, but each arena they touch keeps its pages: about 0.5 MB of a running
module's peak RSS (bench/RESULTS.md). Python's own small-object allocator is not
affected, and the threads take turns under the GIL anyway, so one arena costs no
measurable time. ``MALLOC_ARENA_MAX`` in the environment does the same for a process
started with it; this asks glibc the same from inside, before the threads start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: ``mallopt`` parameter (malloc.h): the most arenas the process may have.
M_ARENA_MAX = -8
#: glibc's variable, which, when set, is the environment's choice and stands.
ENV_VARIABLE = "MALLOC_ARENA_MAX"


def limit_malloc_arenas(arenas: int = 1, environ: Mapping[str, str] | None = None) -> bool:
    """Ask glibc for at most ``arenas`` arenas; False where not asked or not glibc.

    Call it before threads start: an arena a thread has is not taken back.
    """
    if (os.environ if environ is None else environ).get(ENV_VARIABLE):
        return False
    import ctypes  # here: a process that never calls this does not keep ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # a libc without mallopt (musl, macOS): nothing to limit
    return bool(mallopt(M_ARENA_MAX, arenas))
