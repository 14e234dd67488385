"""What the module costs in steady state at 1 Hz: CPU, memory, threads, descriptors, connections.

Four modules run at the same time on one broker, each against its own simulator:
plain HTTP or TLS to the meter, idle or with a transaction running for the whole
measurement. Where EVerest's C++ ``LemDCBM400600`` is built (``cpp_module.py``), its
four variants run beside them under one manager, on the same broker, each against a
simulator of its own, and are measured in the same loop: both sides see the same
machine at the same time. ``/proc`` is sampled once a second. The steady state starts
once the module has published and the transaction (if any) runs; CPU and TCP
connections to the meter (the simulator's ``connections.accepted``) are counted from
there. Growth of RSS is measured from a tenth of the way in, after allocators have
settled.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cpp_module
import harness


@dataclass(frozen=True)
class Variant:
    """Meter transport and whether a transaction runs."""

    tls: bool
    transaction: bool

    @property
    def name(self) -> str:
        """e.g. ``tls_transaction``."""
        return f"{'tls' if self.tls else 'http'}_{'transaction' if self.transaction else 'idle'}"


VARIANTS = (
    Variant(tls=False, transaction=False),
    Variant(tls=False, transaction=True),
    Variant(tls=True, transaction=False),
    Variant(tls=True, transaction=True),
)


#: The implementations measured: this module and EVerest's C++ module.
LEM_DCBM = "lem-dcbm"
CPP = "cpp"


@dataclass
class Subject:
    """One variant's module process, meter and samples."""

    variant: Variant
    implementation: str
    sim: harness.Simulator
    pid: int = 0
    module: harness.ModuleProcess | None = None
    caller: harness.Caller | None = None
    accepted_at_start: int = 0
    samples: list[harness.ProcSample] | None = None

    @property
    def module_id(self) -> str:
        """The module id."""
        side = "" if self.implementation == LEM_DCBM else f"{self.implementation}_"
        return f"footprint_{side}{self.variant.name}"


def start(stack: harness.Stack, broker: harness.Broker, variant: Variant) -> Subject:
    """Start one variant's simulator and module."""
    sim = stack.start_simulator(variant.name, tls=variant.tls, min_transaction_s=0)
    subject = Subject(variant, LEM_DCBM, sim)
    subject.module = stack.start_module(
        subject.module_id, broker, sim.port, tls_cert=sim.cert_path if variant.tls else None
    )
    subject.pid = subject.module.pid
    return subject


def start_cpp(
    stack: harness.Stack, broker: harness.Broker, prefix: Path
) -> tuple[cpp_module.CppManager, list[Subject]]:
    """The C++ module's four variants under one manager, each with its own simulator."""
    subjects = [
        Subject(v, CPP, stack.start_simulator(f"cpp_{v.name}", tls=v.tls, min_transaction_s=0))
        for v in VARIANTS
    ]
    manager = cpp_module.CppManager(
        prefix,
        stack.workdir / "cpp",
        broker,
        {s.module_id: (s.sim, s.variant.tls) for s in subjects},
    ).start()
    try:
        pids = manager.pids()
    except Exception:
        manager.stop()
        raise
    for subject in subjects:
        subject.pid = pids[subject.module_id]
    return manager, subjects


def figures(subject: Subject, times: list[float], duration_s: float) -> dict[str, Any]:
    """The variant's figures from its samples."""
    samples = subject.samples or []
    first, last = samples[0], samples[-1]
    settled = samples[len(samples) // 10]
    wall = last.at - first.at
    accepted = subject.sim.state()["connections"]["accepted"]
    return {
        "variant": subject.variant.name,
        "implementation": subject.implementation,
        "tls": subject.variant.tls,
        "transaction": subject.variant.transaction,
        "duration_s": wall,
        "cpu_s_startup": first.cpu_s,
        "cpu_s": last.cpu_s - first.cpu_s,
        "cpu_s_per_hour": 3600 * (last.cpu_s - first.cpu_s) / wall,
        "cpu_percent": harness.cpu_percent(first, last),
        "rss_mb_start": first.rss_kb / 1024,
        "rss_mb_settled": settled.rss_kb / 1024,
        "rss_mb_end": last.rss_kb / 1024,
        "rss_growth_kb": last.rss_kb - settled.rss_kb,
        "peak_rss_mb": last.hwm_kb / 1024,
        "threads_start": first.threads,
        "threads_end": last.threads,
        "threads_max": max(s.threads for s in samples),
        "fds_start": first.fds,
        "fds_end": last.fds,
        "fds_max": max(s.fds for s in samples),
        "meter_connections_total": accepted,
        "meter_connections_steady": accepted - subject.accepted_at_start,
        "meter_connections_per_hour": 3600 * (accepted - subject.accepted_at_start) / wall,
        "publications": harness.period_stats(times),
        "samples": len(samples),
    }


def run(args: argparse.Namespace) -> None:
    """Run every variant at once (and the C++ module's, where built); table and JSON."""
    duration_s = args.duration or (15.0 if args.quick else 600.0)
    build = cpp_module.find_build() if args.cpp else "not asked for (--no-cpp)"
    cpp_note = build if isinstance(build, str) else ""
    manager: cpp_module.CppManager | None = None
    with harness.Stack("footprint", keep=args.keep) as stack:
        broker = stack.start_broker()
        subjects = [start(stack, broker, variant) for variant in VARIANTS]
        if isinstance(build, Path):
            try:
                manager, cpp_subjects = start_cpp(stack, broker, build)
                subjects += cpp_subjects
            except Exception as err:  # noqa: BLE001 - lem-dcbm's figures are still worth having
                cpp_note = f"the C++ module did not start: {err}"
                harness.say(cpp_note)
        try:
            results = measure(broker, subjects, duration_s)
        finally:
            for subject in subjects:
                if subject.caller is not None:
                    subject.caller.call_ok(
                        "stop_transaction", {"transaction_id": f"{subject.module_id}-tx"}
                    )
                    subject.caller.close()
                if subject.module is not None:
                    stack.stop_module(subject.module)
            if manager is not None:
                manager.stop()
    if cpp_note:
        harness.say(f"C++ module not measured: {cpp_note}")
    harness.print_table(f"steady state over {duration_s:.0f} s at 1 Hz", HEADERS, rows(results))
    harness.write_results(
        "footprint",
        {
            "quick": args.quick,
            "runs": results,
            "cpp": {
                "measured": any(r["implementation"] == CPP for r in results),
                "build": "" if isinstance(build, str) else str(build),
                "note": cpp_note,
            },
        },
        args.out,
    )


def measure(
    broker: harness.Broker, subjects: list[Subject], duration_s: float
) -> list[dict[str, Any]]:
    """Start the transactions, sample every process once a second, return the figures."""
    with harness.VarRecorder(broker) as recorder:
        recorder.wait_count([s.module_id for s in subjects], 1, 60)
        for subject in subjects:
            if subject.variant.transaction:
                subject.caller = harness.Caller(broker, subject.module_id)
                subject.caller.call_ok(
                    "start_transaction", harness.start_args(f"{subject.module_id}-tx")
                )
            subject.accepted_at_start = subject.sim.state()["connections"]["accepted"]
            subject.samples = [harness.proc_sample(subject.pid)]
        began = time.monotonic()
        harness.say(f"sampling {len(subjects)} modules for {duration_s:.0f} s")
        tick = began
        while tick < began + duration_s:
            tick += 1.0
            time.sleep(max(0.0, tick - time.monotonic()))
            for subject in subjects:
                assert subject.samples is not None
                subject.samples.append(harness.proc_sample(subject.pid))
        return [
            figures(s, harness.window(recorder.times(s.module_id), began, tick), duration_s)
            for s in subjects
        ]


HEADERS = (
    "module",
    "variant",
    "CPU s/h",
    "CPU %",
    "startup CPU s",
    "peak RSS MB",
    "RSS MB settled->end",
    "threads",
    "fds",
    "meter conns all/steady",
    "conns/h",
    "period mean s",
)


def rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    """One table row per variant."""
    return [
        [
            r.get("implementation", LEM_DCBM),
            r["variant"],
            r["cpu_s_per_hour"],
            r["cpu_percent"],
            r["cpu_s_startup"],
            r["peak_rss_mb"],
            f"{r['rss_mb_settled']:.1f}->{r['rss_mb_end']:.1f}",
            f"{r['threads_start']}->{r['threads_end']} (max {r['threads_max']})",
            f"{r['fds_start']}->{r['fds_end']} (max {r['fds_max']})",
            f"{r['meter_connections_total']}/{r['meter_connections_steady']}",
            r["meter_connections_per_hour"],
            r["publications"]["mean_s"],
        ]
        for r in results
    ]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--duration", type=float, help="seconds of steady state")
    parser.add_argument(
        "--no-cpp",
        dest="cpp",
        action="store_false",
        help="measure lem-dcbm alone, even where the C++ module is built",
    )
    return harness.run_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
