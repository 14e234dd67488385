"""Many modules on one broker and one machine, each with its own simulated meter.

For each size, N simulators and N modules start at once; once every module has
published and a few seconds have passed, the receive times of all publications are
recorded for the window: period statistics per module and across all of them, and
the CPU and memory of the modules, the simulators and the broker over the window.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import harness

SETTLE_S = 5.0


def total_cpu_percent(
    first: dict[int, harness.ProcSample], last: dict[int, harness.ProcSample]
) -> float:
    """CPU of a group of processes over the window, in percent of one core."""
    return sum(harness.cpu_percent(first[pid], last[pid]) for pid in first)


def samples(pids: list[int]) -> dict[int, harness.ProcSample]:
    """One ``/proc`` sample per process."""
    return {pid: harness.proc_sample(pid) for pid in pids}


def measure(size: int, duration_s: float, settle_s: float, keep: bool) -> dict[str, Any]:
    """Run ``size`` modules for ``duration_s`` and return the figures."""
    with harness.Stack(f"scale{size}", keep=keep) as stack:
        broker = stack.start_broker()
        sims = stack.start_simulators(size)
        module_ids = [f"scale_{i}" for i in range(size)]
        with harness.VarRecorder(broker) as recorder:
            modules = [
                stack.start_module(module_id, broker, sim.port)
                for module_id, sim in zip(module_ids, sims, strict=True)
            ]
            all_published = recorder.wait_count(module_ids, 1, 60 + 3 * size)
            startup_s = all_published - modules[0].started_at
            time.sleep(settle_s)
            groups = {
                "modules": [m.pid for m in modules],
                "simulators": [s.process.pid for s in sims],
                "broker": [broker.process.pid],
            }
            first = {name: samples(pids) for name, pids in groups.items()}
            began = time.monotonic()
            harness.say(f"{size} modules: recording {duration_s:.0f} s")
            time.sleep(duration_s)
            ended = time.monotonic()
            last = {name: samples(pids) for name, pids in groups.items()}
            windows = [harness.window(recorder.times(m), began, ended) for m in module_ids]
    per_module = [harness.period_stats(times) for times in windows]
    means = [p["mean_s"] for p in per_module]
    all_periods = [gap for times in windows for gap in harness.periods(times)]
    module_last = last["modules"].values()
    return {
        "size": size,
        "duration_s": duration_s,
        "all_published_after_s": startup_s,
        "publications": sum(int(p["count"]) for p in per_module),
        "mean_of_means_s": sum(means) / len(means),
        "min_mean_s": min(means),
        "max_mean_s": max(means),
        "worst_mean_deviation_s": max(abs(m - 1.0) for m in means),
        "p1_s": min(p["p1_s"] for p in per_module),
        "p99_s": max(p["p99_s"] for p in per_module),
        "max_s": max(p["max_s"] for p in per_module),
        "all_periods_p99_s": harness.percentile(all_periods, 99),
        "modules_cpu_percent": total_cpu_percent(first["modules"], last["modules"]),
        "simulators_cpu_percent": total_cpu_percent(first["simulators"], last["simulators"]),
        "broker_cpu_percent": total_cpu_percent(first["broker"], last["broker"]),
        "modules_rss_mb": sum(s.rss_kb for s in module_last) / 1024,
        "module_peak_rss_mb_max": max(s.hwm_kb for s in module_last) / 1024,
        "per_module": per_module,
    }


HEADERS = (
    "modules",
    "all publishing after s",
    "mean min s",
    "mean max s",
    "p1 s",
    "p99 s",
    "worst s",
    "modules CPU %",
    "simulators CPU %",
    "broker CPU %",
    "modules RSS MB",
)


def rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    """One table row per size."""
    return [
        [
            r["size"],
            r["all_published_after_s"],
            r["min_mean_s"],
            r["max_mean_s"],
            r["p1_s"],
            r["p99_s"],
            r["max_s"],
            r["modules_cpu_percent"],
            r["simulators_cpu_percent"],
            r["broker_cpu_percent"],
            r["modules_rss_mb"],
        ]
        for r in runs
    ]


def run(args: argparse.Namespace) -> None:
    """Measure every size, print the table, write the JSON."""
    sizes = args.sizes or ([1, 3] if args.quick else [1, 10, 50])
    duration_s = 5.0 if args.quick else 60.0
    settle_s = 1.0 if args.quick else SETTLE_S
    runs = [measure(size, duration_s, settle_s, args.keep) for size in sizes]
    harness.print_table(
        f"N modules on one broker, {duration_s:.0f} s each (periods at an MQTT subscriber)",
        HEADERS,
        rows(runs),
    )
    harness.write_results("scale", {"quick": args.quick, "runs": runs}, args.out)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of modules")
    return harness.run_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
