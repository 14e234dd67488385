"""Time to the first ``powermeter`` publication.

Three cases, each from the module's process start (``Popen``) to the first publication
an MQTT subscriber receives:

- ``ready``: the meter answers before the module starts;
- ``late``: nothing listens on the meter's port until the simulator starts there
  ``--late-s`` seconds after the module (plus a fraction of a second that differs per
  run, so the runs meet the module's retries at different phases); also timed from
  the moment it listens;
- ``no_legal``: the meter answers 404 on the optional ``/legal`` endpoint.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any

import harness

LATE_S = 5.0
#: A meter without the optional ``/legal`` endpoint.
NO_LEGAL: dict[str, Any] = {"http_status": 404, "paths": ["/v1/legal", "/v2/legal"]}


def answering_meter(
    stack: harness.Stack, broker: harness.Broker, case: str, run: int, **faults: Any
) -> dict[str, Any]:
    """Start a module against a meter that already answers (with ``faults``, if any)."""
    sim = stack.start_simulator(f"{case}-{run}")
    if faults:
        sim.set_faults(**faults)
    module_id = f"startup_{case}_{run}"
    with harness.VarRecorder(broker) as recorder:
        module = stack.start_module(module_id, broker, sim.port)
        first = recorder.wait_count([module_id], 1, 120)
    stack.stop_module(module)
    return {"case": case, "from_start_s": first - module.started_at}


def late_meter(
    stack: harness.Stack, broker: harness.Broker, run: int, late_s: float
) -> dict[str, Any]:
    """Start a module, then its meter ``late_s`` later on the port reserved for it."""
    # The port stays bound (not listening: the module's connections are refused, as by a
    # meter that is off) until the meter starts, so no neighbouring process can take it.
    module_id = f"startup_late_{run}"
    with harness.VarRecorder(broker) as recorder:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            port = int(holder.getsockname()[1])
            module = stack.start_module(module_id, broker, port)
            # The scenario itself: the meter powers up this long after the module.
            time.sleep(max(0.0, module.started_at + late_s - time.monotonic()))
        sim = stack.start_simulator(f"late-{run}", port=port)
        first = recorder.wait_count([module_id], 1, 60)
    stack.stop_module(module)
    return {
        "case": "late",
        "from_start_s": first - module.started_at,
        "from_meter_s": first - sim.listening_at,
        "meter_late_s": sim.listening_at - module.started_at,
    }


def summary(runs: list[dict[str, Any]], case: str, key: str) -> dict[str, float]:
    """Median and worst of ``key`` over the runs of ``case``."""
    values = [r[key] for r in runs if r["case"] == case and key in r]
    return {"median_s": harness.percentile(values, 50), "max_s": max(values), "runs": len(values)}


HEADERS = ("case", "runs", "median s", "worst s")


def rows(summaries: dict[str, dict[str, float]]) -> list[list[Any]]:
    """One table row per case."""
    return [[name, s["runs"], s["median_s"], s["max_s"]] for name, s in summaries.items()]


def run(args: argparse.Namespace) -> None:
    """Time every case, print the table, write the JSON."""
    repeats = 1 if args.quick else 5
    late_repeats = 1 if args.quick else 4
    runs: list[dict[str, Any]] = []
    with harness.Stack("startup", keep=args.keep) as stack:
        broker = stack.start_broker()
        for i in range(repeats):
            runs.append(answering_meter(stack, broker, "ready", i))
        for i in range(late_repeats):
            # Spread the meter's start over one retry interval of the module.
            late_s = args.late_s + i / late_repeats
            harness.say(f"late meter, run {i + 1}: the meter starts after {late_s:.2f} s")
            runs.append(late_meter(stack, broker, i, late_s))
        for i in range(late_repeats):
            runs.append(answering_meter(stack, broker, "no_legal", i, **NO_LEGAL))
    summaries = {
        "ready_from_start": summary(runs, "ready", "from_start_s"),
        "late_from_meter": summary(runs, "late", "from_meter_s"),
        "late_from_start": summary(runs, "late", "from_start_s"),
        "no_legal_from_start": summary(runs, "no_legal", "from_start_s"),
    }
    harness.print_table("time to the first powermeter publication", HEADERS, rows(summaries))
    harness.write_results(
        "startup",
        {"quick": args.quick, "late_s": args.late_s, "summary": summaries, "runs": runs},
        args.out,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--late-s", type=float, default=LATE_S, help="meter start delay")
    return harness.run_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
