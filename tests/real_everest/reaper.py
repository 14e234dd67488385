"""Start the EVerest manager as a child and collect the exit status of every module it runs.

``python reaper.py EXITS.json -- manager ARGS...``. The 0.25 manager has no graceful
shutdown: when it ends, its modules get SIGTERM (their parent-death signal) and are
orphaned, so nobody would see how they exit. This process makes itself the child
subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): orphans come to it, it reaps them and writes
``[{"pid", "argv", "code"}, ...]`` to EXITS.json (``code`` as ``Popen.returncode``).
SIGTERM and SIGINT are passed on to the manager. It exits when no child is left.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
#: How often descendants are looked up (their command lines are gone once they exit).
SCAN_S = 0.1


def descendants(root: int) -> dict[int, list[str]]:
    """Command lines of the processes below ``root``, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, list[str]] = {}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor != root and ancestor > 1:
            ancestor = parents.get(ancestor)
        if ancestor == root:
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if raw:
                found[pid] = raw.decode(errors="replace").rstrip("\0").split("\0")
    return found


def main(argv: list[str]) -> int:
    """Run the manager below ``--`` and record its modules' exits in ``argv[0]``."""
    out = Path(argv[0])
    command = argv[argv.index("--") + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"reaper: prctl failed: errno {ctypes.get_errno()}", file=sys.stderr)
        return 1
    manager = subprocess.Popen(command)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda sig, _frame: manager.send_signal(sig))
    known: dict[int, list[str]] = {manager.pid: command}
    exits: list[dict[str, object]] = []
    manager_code = 0
    while True:
        known.update(descendants(os.getpid()))
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(SCAN_S)
            continue
        code = os.waitstatus_to_exitcode(status)
        if pid == manager.pid:
            manager.returncode = code
            manager_code = code
        exits.append({"pid": pid, "argv": known.get(pid, []), "code": code})
        out.write_text(json.dumps(exits, indent=1))
    out.write_text(json.dumps(exits, indent=1))
    return manager_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
