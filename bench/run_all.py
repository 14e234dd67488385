"""Run every benchmark and write ``bench/RESULTS.md``.

``footprint.py`` (ten minutes of steady state) runs in the background while
``publish_schedule.py``, ``startup.py`` and ``command_latency.py`` run one after the
other; ``scale.py`` runs last, alone, because it loads both cores. The whole run fits
in 20 minutes. ``--quick`` passes through (and writes ``bench/results/RESULTS.quick.md``
instead) and then starts every benchmark at once; ``--report-only`` rebuilds the report
from the JSON of the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
from report import write_report

from lem_dcbm.harness import find_mosquitto

BENCH = Path(__file__).resolve().parent
SEQUENTIAL = ("publish_schedule", "startup", "command_latency")
BACKGROUND = "footprint"
ALONE = "scale"


def machine() -> dict[str, Any]:
    """CPU, memory, OS, Python and broker version."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
    ]
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    return {
        "nproc": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": mosquitto_version(),
    }


def mosquitto_version() -> str:
    """``mosquitto version X`` from its help text."""
    binary = find_mosquitto()
    if binary is None:
        return "unknown"
    try:
        done = subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (done.stdout or done.stderr).splitlines()
    return first[0].strip() if first else "unknown"


def git_commit() -> str:
    """HEAD, with ``+dirty`` when tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=harness.ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def command(name: str, quick: bool, results_dir: Path) -> list[str]:
    """The command line of one benchmark."""
    argv = [sys.executable, str(BENCH / f"{name}.py"), "--out", str(results_dir / f"{name}.json")]
    return argv + (["--quick"] if quick else [])


def run_benchmarks(quick: bool, results_dir: Path) -> dict[str, Any]:
    """Run them all; return each one's exit code and wall time."""
    if quick:
        return run_all_at_once(results_dir)
    outcome: dict[str, Any] = {}
    began = time.monotonic()
    harness.say(f"{BACKGROUND} starts in the background")
    background = subprocess.Popen(command(BACKGROUND, quick, results_dir))
    for name in SEQUENTIAL:
        harness.say(f"{name} starts")
        started = time.monotonic()
        code = subprocess.run(command(name, quick, results_dir), check=False).returncode
        outcome[name] = {"exit_code": code, "wall_s": time.monotonic() - started}
    harness.say(f"waiting for {BACKGROUND}")
    outcome[BACKGROUND] = {"exit_code": background.wait(), "wall_s": time.monotonic() - began}
    harness.say(f"{ALONE} starts")
    started = time.monotonic()
    code = subprocess.run(command(ALONE, quick, results_dir), check=False).returncode
    outcome[ALONE] = {"exit_code": code, "wall_s": time.monotonic() - started}
    outcome["total_wall_s"] = time.monotonic() - began
    return outcome


def run_all_at_once(results_dir: Path) -> dict[str, Any]:
    """The ``--quick`` run: every benchmark at once, as its figures mean nothing anyway.

    Apart, they would sit one after the other on the clock; together, the run takes
    about as long as the longest one (the test suite runs it on every change).
    """
    names = (*SEQUENTIAL, BACKGROUND, ALONE)
    began = time.monotonic()
    harness.say(f"{', '.join(names)} start at once (--quick)")
    running = {name: subprocess.Popen(command(name, True, results_dir)) for name in names}
    outcome: dict[str, Any] = {}
    for name, process in running.items():
        outcome[name] = {"exit_code": process.wait(), "wall_s": time.monotonic() - began}
    outcome["total_wall_s"] = time.monotonic() - began
    return outcome


def main(argv: list[str] | None = None) -> int:
    """Run (unless ``--report-only``), then write the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every benchmark in --quick mode")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    parser.add_argument(
        "--results-dir", type=Path, default=harness.RESULTS_DIR, help="where the JSON goes"
    )
    args = parser.parse_args(argv)
    results_dir: Path = args.results_dir
    meta_path = results_dir / "run_all.json"
    if args.report_only:
        meta = json.loads(meta_path.read_text())
    else:
        meta = {
            "quick": args.quick,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "commit": git_commit(),
            "machine": machine(),
        }
        results_dir.mkdir(parents=True, exist_ok=True)
        # A benchmark that fails must not leave the figures of an earlier run in the report.
        for name in (*SEQUENTIAL, BACKGROUND, ALONE):
            (results_dir / f"{name}.json").unlink(missing_ok=True)
        meta["benchmarks"] = run_benchmarks(args.quick, results_dir)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    target = results_dir / "RESULTS.quick.md" if meta["quick"] else BENCH / "RESULTS.md"
    write_report(meta, target, results_dir)
    harness.say(f"report written to {target}")
    failed = [k for k, v in meta["benchmarks"].items() if isinstance(v, dict) and v["exit_code"]]
    if failed:
        harness.say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
