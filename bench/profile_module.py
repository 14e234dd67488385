"""Where the module spends its CPU in steady state: py-spy attached for a while.

Not part of ``run_all.py``: it needs py-spy (``pip install py-spy`` into the venv; it
is no dependency of the project). One module publishes at 1 Hz against a simulator;
with ``--commands N`` it also answers N start/stop pairs during the recording. py-spy
samples every thread (``--idle`` off: only stacks that run) and the collapsed stacks
are summed per function: own samples and samples including callees.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness

RATE_HZ = 1000


def summarize(raw: Path, top: int) -> dict[str, Any]:
    """Own and inclusive samples per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [
            frame.split(" (")[0] + " (" + frame.split(" (")[1].split(":")[0] + ")"
            if " (" in frame
            else frame
            for frame in stack.split(";")
        ]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "own": own.most_common(top),
        "inclusive": inclusive.most_common(top),
    }


def run(args: argparse.Namespace) -> None:
    """Record, summarize, print, write the JSON."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise harness.BenchError("py-spy not found: pip install py-spy into the venv")
    with harness.Stack("profile", keep=args.keep) as stack:
        broker = stack.start_broker()
        sim = stack.start_simulator("meter")
        module = stack.start_module("profiled", broker, sim.port)
        with harness.VarRecorder(broker) as recorder:
            recorder.wait_count(["profiled"], 2, 60)
        raw = stack.workdir / "profile.txt"
        first = harness.proc_sample(module.pid)
        recording = subprocess.Popen(
            [
                py_spy,
                "record",
                "-p",
                str(module.pid),
                "-d",
                str(int(args.seconds)),
                "-r",
                str(RATE_HZ),
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if args.commands:
            caller = harness.Caller(broker, "profiled")
            for i in range(args.commands):
                caller.call_ok("start_transaction", harness.start_args(f"profile-{i}"))
                caller.call_ok("stop_transaction", {"transaction_id": f"profile-{i}"})
            caller.close()
        _, errors = recording.communicate(timeout=args.seconds + 60)
        last = harness.proc_sample(module.pid)
        if recording.returncode != 0 or not raw.exists():
            raise harness.BenchError(f"py-spy failed: {errors.strip()[-500:]}")
        summary = summarize(raw, args.top)
    summary["cpu_s"] = last.cpu_s - first.cpu_s
    summary["wall_s"] = last.at - first.at
    summary["commands"] = args.commands
    for kind in ("own", "inclusive"):
        harness.print_table(
            f"{kind} samples per function ({summary['samples']} samples at {RATE_HZ} Hz)",
            ["function", "samples", "%"],
            [[f, n, 100.0 * n / max(1, summary["samples"])] for f, n in summary[kind]],
        )
    harness.write_results("profile", summary, args.out)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--seconds", type=float, default=60.0, help="recording time")
    parser.add_argument("--commands", type=int, default=0, help="start/stop pairs meanwhile")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
    started = time.monotonic()
    code = harness.run_main(run, args)
    harness.say(f"done in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
