"""Period of the ``powermeter`` var with a fast meter, a slow one, and under command load.

For each variant a module runs against its own simulator, all at the same time on one
broker: meter latency 0 and 300 ms on every request, and ``load``: every settings write
and every record fetch takes 500 ms while a start/stop pair runs every 5 s. After the
first publications and a short settling time the receive times of the publications are
recorded for the measuring window: count, mean, p99 and worst period, and how many
publications a 1 s grid would have had that did not come.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from typing import Any

import harness

LATENCIES_MS = (0, 300)
#: The load variant: these requests take 500 ms, and a start/stop pair runs every 5 s.
LOAD = "load"
SLOW_PATHS = ["/v1/settings", "/v1/ocmf", "/v2/ocmf"]
PAIR_EVERY_S = 5.0


def run_pairs(caller: harness.Caller, stop: threading.Event, pairs: list[int]) -> None:
    """Start and stop a transaction every ``PAIR_EVERY_S`` until ``stop`` is set."""
    while not stop.is_set():
        began = time.monotonic()
        transaction_id = str(uuid.uuid4())
        caller.call_ok("start_transaction", harness.start_args(transaction_id))
        caller.call_ok("stop_transaction", {"transaction_id": transaction_id})
        pairs.append(1)
        stop.wait(max(0.0, PAIR_EVERY_S - (time.monotonic() - began)))


SETTLE_S = 2.0
QUICK_SETTLE_S = 0.5


def run(args: argparse.Namespace) -> None:
    """Measure at every latency at once, print the table, write the JSON."""
    duration_s = args.seconds or (5.0 if args.quick else 120.0)
    settle_s = QUICK_SETTLE_S if args.quick else SETTLE_S
    with harness.Stack("schedule", keep=args.keep) as stack:
        broker = stack.start_broker()
        module_ids: dict[int | str, str] = {}
        with harness.VarRecorder(broker) as recorder:
            for latency_ms in LATENCIES_MS:
                sim = stack.start_simulator(f"meter-{latency_ms}ms")
                sim.set_latency(latency_ms)
                module_ids[latency_ms] = f"schedule_{latency_ms}ms"
                stack.start_module(module_ids[latency_ms], broker, sim.port)
            loaded = stack.start_simulator("meter-load")
            loaded.set_faults(latency_ms=500, paths=SLOW_PATHS)
            module_ids[LOAD] = "schedule_load"
            stack.start_module(module_ids[LOAD], broker, loaded.port)
            start = recorder.wait_count(module_ids.values(), 1, 60) + settle_s
            stop_load = threading.Event()
            pairs: list[int] = []
            caller = harness.Caller(broker, module_ids[LOAD])
            load = threading.Thread(target=run_pairs, args=(caller, stop_load, pairs))
            load.start()
            try:
                harness.say(
                    f"meter latencies {LATENCIES_MS} ms and {LOAD}: recording {duration_s:.0f} s"
                )
                time.sleep(max(0.0, start + duration_s - time.monotonic()))
            finally:
                stop_load.set()
                load.join(60)
                caller.close()
            times = {
                variant: harness.window(recorder.times(module_id), start, start + duration_s)
                for variant, module_id in module_ids.items()
            }
        for module in stack.modules:
            stack.stop_module(module)
    variants: list[int | str] = [*LATENCIES_MS, LOAD]
    runs = [figures(variant, duration_s, times[variant]) for variant in variants]
    runs[-1]["start_stop_pairs"] = len(pairs)
    harness.print_table(
        f"powermeter period over {duration_s:.0f} s (receive times at an MQTT subscriber)",
        HEADERS,
        rows(runs),
    )
    harness.write_results("publish_schedule", {"quick": args.quick, "runs": runs}, args.out)


HEADERS = (
    "meter latency ms / load",
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


def figures(latency_ms: int | str, duration_s: float, times: list[float]) -> dict[str, Any]:
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
