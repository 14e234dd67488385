"""One malloc arena per process: threads that allocate share it instead of taking their own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lem_dcbm.malloc_arenas import limit_malloc_arenas

#: Threads allocate below glibc's mmap threshold (arena memory); each arena beyond the
#: main one shows in /proc/self/maps as a reserved region without access, as does each
#: thread stack's guard page: the count goes down by one per arena not created.
THREADS_ALLOCATING = """
import sys, threading
from lem_dcbm.malloc_arenas import limit_malloc_arenas
print(limit_malloc_arenas() if sys.argv[1] == "limit" else "-")
release = threading.Event()
started = threading.Barrier(7)
def work():
    kept = [bytearray(100_000) for _ in range(3)]
    started.wait()
    release.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
started.wait()
with open("/proc/self/maps") as maps:
    print(sum(1 for line in maps if line.split()[1] == "---p" and len(line.split()) == 5))
release.set()
for thread in threads:
    thread.join()
"""


def reserved_regions(how: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", THREADS_ALLOCATING, how],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    answer, count = result.stdout.split()
    return answer, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's /proc maps")
def test_limited_threads_share_one_arena() -> None:
    answer, limited = reserved_regions("limit", env={"PATH": "/usr/bin:/bin"})
    _, unlimited = reserved_regions("no-limit", env={"PATH": "/usr/bin:/bin"})

    assert answer == "True"
    # Six threads: six guard pages either way, and an arena of its own for each thread
    # (glibc allows eight per core) without the limit.
    assert limited < unlimited


def test_the_environments_choice_stands() -> None:
    assert limit_malloc_arenas(environ={"MALLOC_ARENA_MAX": "4"}) is False
