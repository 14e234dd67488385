"""Period of the ``powermeter`` var with a fast and with a slow meter.

For each meter latency (0 and 300 ms on every meter request) a module runs against its
own simulator, both at the same time on one broker; after the first publications and
a short settling time the receive times of the publications are recorded for the
measuring window: count, mean, p99 and worst period, and how many publications a 1 s
grid would have had that did not come.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import harness

LATENCIES_MS = (0, 300)
SETTLE_S = 2.0
QUICK_SETTLE_S = 0.5


def run(args: argparse.Namespace) -> None:
    """Measure at every latency at once, print the table, write the JSON."""
    duration_s = args.seconds or (5.0 if args.quick else 120.0)
    settle_s = QUICK_SETTLE_S if args.quick else SETTLE_S
    with harness.Stack("schedule", keep=args.keep) as stack:
        broker = stack.start_broker()
        module_ids = {}
        with harness.VarRecorder(broker) as recorder:
            for latency_ms in LATENCIES_MS:
                sim = stack.start_simulator(f"meter-{latency_ms}ms")
                sim.set_latency(latency_ms)
                module_ids[latency_ms] = f"schedule_{latency_ms}ms"
                stack.start_module(module_ids[latency_ms], broker, sim.port)
            start = recorder.wait_count(module_ids.values(), 1, 60) + settle_s
            harness.say(f"meter latencies {LATENCIES_MS} ms: recording {duration_s:.0f} s")
            time.sleep(start + duration_s - time.monotonic())
            times = {
                latency_ms: harness.window(recorder.times(module_id), start, start + duration_s)
                for latency_ms, module_id in module_ids.items()
            }
        for module in stack.modules:
            stack.stop_module(module)
    runs = [figures(latency_ms, duration_s, times[latency_ms]) for latency_ms in LATENCIES_MS]
    harness.print_table(
        f"powermeter period over {duration_s:.0f} s (receive times at an MQTT subscriber)",
        HEADERS,
        rows(runs),
    )
    harness.write_results("publish_schedule", {"quick": args.quick, "runs": runs}, args.out)


HEADERS = (
    "meter latency ms",
    "count",
    "mean s",
    "p1 s",
    "p50 s",
    "p99 s",
    "worst s",
    "worst deviation ms",
    "lost %",
)


def rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    """One table row per latency."""
    return [
        [
            r["latency_ms"],
            r["count"],
            r["mean_s"],
            r["p1_s"],
            r["p50_s"],
            r["p99_s"],
            r["max_s"],
            1000 * r["worst_deviation_s"],
            r["lost_percent"],
        ]
        for r in runs
    ]


def figures(latency_ms: int, duration_s: float, times: list[float]) -> dict[str, Any]:
    """Period statistics and the share of a 1 s grid's publications that did not come."""
    expected = duration_s  # one publication per second
    return {
        "latency_ms": latency_ms,
        "duration_s": duration_s,
        **harness.period_stats(times),
        "expected_count": expected,
        "lost_percent": max(0.0, 100.0 * (expected - len(times)) / expected),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="measuring window per latency (default 120; 5 with --quick)",
    )
    args = parser.parse_args(argv)
    return harness.run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
