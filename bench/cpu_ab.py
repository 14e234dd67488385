"""CPU of two versions of the module side by side: which change saves what.

A change that saves a tenth of a millisecond a second is lost in the spread between two
runs of one benchmark on a shared machine. Here both versions run at the same time, on
one broker, the same number of modules each (HTTP or TLS to the meter, a transaction
running), every module against a simulator of its own, so whatever else the machine
does falls on both alike. Each version is a source tree (``--a``, ``--b``: a checkout
or a ``git worktree``) put first on the module's ``PYTHONPATH``. CPU comes from the
scheduler (``/proc/PID/task/*/schedstat``, nanoseconds, every thread), not from the
10 ms ticks of ``/proc/PID/stat``: a module that runs 2 ms a second is 0.2 ticks.

Not part of ``run_all.py``: it is for investigating a change, ``footprint.py`` measures
the module as it is.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness

from lem_dcbm.harness import write_config as write_module_config
from lem_dcbm.harness.module_process import start_module


def sched_cpu_s(pid: int) -> float:
    """CPU seconds of every live thread of ``pid``, as the scheduler counted them."""
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total_ns += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between the listing and the read
    return total_ns / 1e9


def run(args: argparse.Namespace) -> None:
    """Start both versions' modules, start their transactions, sample, print the table."""
    trees = {"a": args.a.resolve(), "b": args.b.resolve()}
    for tree in trees.values():
        if not (tree / "lem_dcbm" / "__init__.py").exists():
            raise harness.BenchError(f"{tree} holds no lem_dcbm package")
        compileall.compile_dir(tree / "lem_dcbm", quiet=1)
    with harness.Stack("cpu-ab", keep=args.keep) as stack:
        broker = stack.start_broker()
        modules: list[dict[str, Any]] = []
        # Interleaved, so neither version always starts first.
        for i in range(args.modules):
            for side, tree in trees.items():
                module_id = f"ab_{side}_{i}"
                sim = stack.start_simulator(module_id, tls=args.tls, min_transaction_s=0)
                values: dict[str, Any] = {"ip_address": "127.0.0.1", "port": sim.port}
                if args.tls:
                    values["meter_tls_certificate"] = sim.cert_path.read_text()
                workdir = stack.workdir / module_id
                config = write_module_config(workdir / "config.yaml", values, module_id)
                process = start_module(
                    workdir,
                    config,
                    broker.port,
                    env={"PYTHONPATH": str(tree)},
                    log_level=None,
                    module_id=module_id,
                )
                stack.modules.append(process)
                modules.append({"side": side, "id": module_id, "process": process})
        with harness.VarRecorder(broker) as recorder:
            recorder.wait_count([m["id"] for m in modules], 2, 60)
            for m in modules:
                if args.transaction:
                    m["caller"] = harness.Caller(broker, m["id"])
                    m["caller"].call_ok("start_transaction", harness.start_args(f"{m['id']}-tx"))
            # Settle: the first verification and the first answers are start-up costs.
            time.sleep(args.settle)
            began = time.monotonic()
            for m in modules:
                m["cpu0"] = sched_cpu_s(m["process"].pid)
            harness.say(f"sampling {len(modules)} modules for {args.duration:.0f} s")
            time.sleep(args.duration)
            wall = time.monotonic() - began
            for m in modules:
                m["cpu_percent"] = 100 * (sched_cpu_s(m["process"].pid) - m["cpu0"]) / wall
                times = harness.window(recorder.times(m["id"]), began, began + wall)
                m["publications"] = len(times)
        for m in modules:
            if "caller" in m:
                m["caller"].call_ok("stop_transaction", {"transaction_id": f"{m['id']}-tx"})
                m["caller"].close()
    rows = [
        [m["side"], m["id"], m["cpu_percent"], m["publications"]]
        for m in sorted(modules, key=lambda m: m["id"])
    ]
    means = {
        side: statistics.mean(m["cpu_percent"] for m in modules if m["side"] == side)
        for side in trees
    }
    rows += [[side, f"mean of {args.modules}", means[side], ""] for side in trees]
    variant = f"{'TLS' if args.tls else 'HTTP'}, {'a transaction' if args.transaction else 'idle'}"
    harness.print_table(
        f"CPU over {wall:.0f} s at 1 Hz ({variant}); a = {trees['a']}, b = {trees['b']}",
        ["side", "module", "CPU %", "publications"],
        rows,
    )
    change = 100 * (means["b"] - means["a"]) / means["a"] if means["a"] else 0.0
    harness.say(f"b against a: {change:+.1f} %")
    harness.write_results(
        "cpu_ab",
        {
            "a": str(trees["a"]),
            "b": str(trees["b"]),
            "tls": args.tls,
            "transaction": args.transaction,
            "duration_s": wall,
            "modules": [
                {k: m[k] for k in ("side", "id", "cpu_percent", "publications")} for m in modules
            ],
            "mean_cpu_percent": means,
        },
        args.out,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--a", type=Path, default=harness.ROOT, help="first source tree")
    parser.add_argument("--b", type=Path, required=True, help="second source tree")
    parser.add_argument("--modules", type=int, default=2, help="modules per version")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds sampled")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before sampling")
    parser.add_argument("--http", dest="tls", action="store_false", help="plain HTTP to the meter")
    parser.add_argument(
        "--idle", dest="transaction", action="store_false", help="no transaction running"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.settle, args.modules = 5.0, 1.0, 1
    return harness.run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
