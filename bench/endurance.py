"""A charger's year: many sessions, crashes, hours of publications and a slow disk.

Three runs, each printing a table (``python bench/endurance.py {sessions,soak,slow-fsync}``):

``sessions``
    10 000 sessions through the real ``Controller`` and the real ``SimulatedMeter`` on an
    injected clock (a simulated year: 27 sessions a day), with a crash at 1 000 random
    instants. See ``endurance_sessions`` for how a crash is made and why it is
    representative.
``soak``
    The real module process against the simulator over real sockets for ``--minutes``,
    a session every ``--session-every`` seconds, ``/proc`` and the journal sampled every
    minute; growth per hour from a least-squares line through the samples after the
    first tenth.
``slow-fsync``
    The module process with every ``fsync`` of its journal delayed by 200 ms (see
    ``endurance_fsync``): command latency p50/p99 and the largest gap between
    publications.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import harness

DAY_S = 86_400.0


def directory_bytes(path: Path) -> tuple[int, int]:
    """Files and total bytes under ``path`` (0, 0 if it does not exist)."""
    files = 0
    size = 0
    if path.exists():
        for item in path.rglob("*"):
            if item.is_file():
                files += 1
                size += item.stat().st_size
    return files, size


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour; 0 for fewer than 2."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 3600.0 * cov / var


# -- soak --------------------------------------------------------------------------------


SOAK_HEADERS = ("minute", "RSS MB", "threads", "fds", "journal files", "journal kB", "sessions")


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """The module process for ``args.minutes`` with sessions; samples every minute."""
    minutes = args.minutes
    sample_every_s = args.sample_seconds
    module_id = "endurance_soak"
    rows: list[list[Any]] = []
    samples: list[dict[str, Any]] = []
    sessions = 0
    failures: list[str] = []
    with harness.Stack("endurance-soak", keep=args.keep) as stack:
        broker = stack.start_broker()
        sim = stack.start_simulator("meter", min_transaction_s=0)
        module = stack.start_module(module_id, broker, sim.port)
        journal_dir = stack.workdir / module_id / "state"
        caller = harness.Caller(broker, module_id)
        with harness.VarRecorder(broker) as recorder:
            recorder.wait_count([module_id], 1, 60)
            began = time.monotonic()
            end = began + minutes * 60.0
            next_sample = began
            next_session = began
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    proc = harness.proc_sample(module.pid)
                    files, size = directory_bytes(journal_dir)
                    sample = {
                        "t_s": now - began,
                        "rss_kb": proc.rss_kb,
                        "hwm_kb": proc.hwm_kb,
                        "threads": proc.threads,
                        "fds": proc.fds,
                        "journal_files": files,
                        "journal_bytes": size,
                        "sessions": sessions,
                        "publications": len(recorder.times(module_id)),
                    }
                    samples.append(sample)
                    rows.append(
                        [
                            round(sample["t_s"] / 60.0),
                            proc.rss_kb / 1024,
                            proc.threads,
                            proc.fds,
                            files,
                            size / 1024,
                            sessions,
                        ]
                    )
                    harness.say(
                        f"soak minute {rows[-1][0]}: RSS {proc.rss_kb} kB, threads "
                        f"{proc.threads}, fds {proc.fds}, journal {files} files {size} B, "
                        f"{sessions} sessions"
                    )
                    if args.progress:
                        _write_soak(args.progress, samples, failures, minutes, final=False)
                    next_sample += sample_every_s
                    if now >= end:
                        break
                if now >= next_session and now < end:
                    transaction_id = f"soak-{sessions:06d}"
                    try:
                        caller.call_ok("start_transaction", harness.start_args(transaction_id))
                        stopped = caller.call_ok(
                            "stop_transaction", {"transaction_id": transaction_id}
                        )
                        if not stopped.get("signed_meter_value"):
                            failures.append(f"{transaction_id}: no signed record")
                    except harness.BenchError as err:
                        failures.append(f"{transaction_id}: {err}")
                    sessions += 1
                    next_session += args.session_every
                time.sleep(max(0.0, min(next_sample, next_session) - time.monotonic()))
            times = harness.window(recorder.times(module_id), began, time.monotonic())
        caller.close()
        stack.stop_module(module)
    result = _soak_figures(samples, failures, minutes)
    result["publications"] = harness.period_stats(times)
    return result


def _soak_figures(
    samples: list[dict[str, Any]], failures: list[str], minutes: float
) -> dict[str, Any]:
    settled = samples[len(samples) // 10 :] if len(samples) >= 10 else samples
    rss = [(s["t_s"], s["rss_kb"] / 1024.0) for s in settled]
    first, last = samples[0], samples[-1]
    rss_per_hour = slope_per_hour(rss)
    # Each kept transaction costs memory until the journal holds ``keep`` of them; growth
    # after that is what a charger sees for years.
    full = [s for s in samples if s["journal_files"] >= last["journal_files"]]
    bounded = full if len(full) >= 5 and len(full) < len(samples) else []
    bounded_per_hour = slope_per_hour([(s["t_s"], s["rss_kb"] / 1024.0) for s in bounded])
    return {
        "minutes_planned": minutes,
        "minutes_run": last["t_s"] / 60.0,
        "samples": samples,
        "sessions": last["sessions"],
        "failures": failures,
        "rss_mb_first": first["rss_kb"] / 1024,
        "rss_mb_last": last["rss_kb"] / 1024,
        "rss_mb_per_hour": rss_per_hour,
        "rss_mb_per_day": 24 * rss_per_hour,
        "journal_bound_from_minute": bounded[0]["t_s"] / 60.0 if bounded else None,
        "rss_mb_per_hour_journal_bound": bounded_per_hour if bounded else None,
        "rss_mb_per_day_journal_bound": 24 * bounded_per_hour if bounded else None,
        "threads": (first["threads"], last["threads"], max(s["threads"] for s in samples)),
        "fds": (first["fds"], last["fds"], max(s["fds"] for s in samples)),
        "journal_bytes_per_hour": slope_per_hour(
            [(s["t_s"], float(s["journal_bytes"])) for s in settled]
        ),
        "journal_files_last": last["journal_files"],
        "journal_bytes_last": last["journal_bytes"],
    }


def _write_soak(
    path: Path, samples: list[dict[str, Any]], failures: list[str], minutes: float, *, final: bool
) -> None:
    figures = _soak_figures(samples, failures, minutes)
    figures["final"] = final
    path.write_text(json.dumps(figures, indent=1) + "\n")


def print_soak(result: dict[str, Any]) -> None:
    """The per-minute table and the growth figures."""
    samples = result["samples"]
    step = max(1, len(samples) // 30)
    shown = samples[::step]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    harness.print_table(
        f"soak: module process, {result['minutes_run']:.0f} min, sampled every minute",
        SOAK_HEADERS,
        [
            [
                round(s["t_s"] / 60.0),
                s["rss_kb"] / 1024,
                s["threads"],
                s["fds"],
                s["journal_files"],
                s["journal_bytes"] / 1024,
                s["sessions"],
            ]
            for s in shown
        ],
    )
    harness.print_table(
        "soak: growth",
        ("figure", "value", "target"),
        [
            ["sessions", result["sessions"], "-"],
            ["failed sessions", len(result["failures"]), "0"],
            [
                "RSS MB first -> last",
                f"{result['rss_mb_first']:.1f} -> {result['rss_mb_last']:.1f}",
                "-",
            ],
            ["RSS growth MB/h (after first tenth)", result["rss_mb_per_hour"], "-"],
            ["RSS growth MB/day", result["rss_mb_per_day"], "-"],
            [
                "RSS growth MB/day once the journal is at its bound",
                "-"
                if result["journal_bound_from_minute"] is None
                else f"{result['rss_mb_per_day_journal_bound']:.3f} "
                f"(from minute {result['journal_bound_from_minute']:.0f})",
                "< 1",
            ],
            ["threads first/last/max", "/".join(map(str, result["threads"])), "no growth"],
            ["fds first/last/max", "/".join(map(str, result["fds"])), "no growth"],
            ["journal kB/h", result["journal_bytes_per_hour"] / 1024, "bounded by keep"],
            ["journal files at end", result["journal_files_last"], "-"],
            ["publication period mean s", result["publications"]["mean_s"], "1.000"],
            ["publication worst gap s", result["publications"]["max_s"], "-"],
        ],
    )


# -- sessions -----------------------------------------------------------------------------


def sessions(args: argparse.Namespace) -> dict[str, Any]:
    """A simulated year through the controller with crashes (see ``endurance_sessions``)."""
    import logging
    import tempfile

    import endurance_sessions

    # Thousands of crashes log thousands of warnings; the table tells what matters.
    logging.getLogger("lem_dcbm").setLevel(logging.CRITICAL)
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="lem-endurance-", dir=shm if shm.is_dir() else None))
    try:
        return endurance_sessions.run_year(
            work,
            sessions=args.sessions,
            crashes=args.crashes,
            seed=args.seed,
            big_journal=args.big_journal,
            stop_minimum_wait_ms=args.stop_minimum_wait_ms,
        ) | {"work_dir": str(work)}
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def print_sessions(result: dict[str, Any]) -> None:
    """The year's table."""
    harness.print_table(
        f"sessions: {result['sessions']} sessions over {result['simulated_days']:.0f} simulated "
        f"days, {result['crashes']} crashes ({result['run_s']:.0f} s wall)",
        ("figure", "value", "target"),
        [
            ["transactions the meter ran", result["transactions_at_meter"], "-"],
            ["records billed", result["records_billed"], "= transactions"],
            ["  by the stop answer", result["by_stop_answer"], "-"],
            ["  by the late road", result["by_late_road"], "-"],
            ["lost", result["lost"], "0"],
            ["duplicate", result["duplicate"], "0"],
            [
                "  marked copies of recovery answers (dropped by record number)",
                result.get("marked_copies_of_answers", 0),
                "-",
            ],
            [
                "  late copies cut by a crash before the journal noted them (published again)",
                result.get("late_cut_by_a_crash", 0),
                "-",
            ],
            ["foreign", result["foreign"], "0"],
            ["starts refused", result["start_refused"], "-"],
            ["pending records at the end", len(result["pending_at_end"]), "0"],
            ["meter logbook entries (of 40 000)", result["logbook_events"], "< 40 000"],
            ["crashes (module restarts)", f"{result['crashes']} ({result['restarts']})", "1000"],
            [
                "crash points",
                ", ".join(f"{k}: {v}" for k, v in sorted(result["crash_points"].items())),
                "-",
            ],
            [
                "journal at the end",
                f"{result['journal_files']} files, {result['journal_bytes'] / 1024:.0f} kB",
                "bounded",
            ],
            ["start-up with that journal s", result["startup_s"], "-"],
            ["records list on it s", result["records_list_s"], "-"],
            [
                "journal grown to",
                f"{result['big_journal_files']} files, {result['big_journal_bytes'] / 1024:.0f} kB",
                "-",
            ],
            ["start-up with it s", result["big_startup_s"], "-"],
            ["records list on it s", result["big_records_list_s"], "-"],
        ],
    )


# -- entry point -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    """Run the chosen part and print its table."""
    if args.part == "sessions":
        result = sessions(args)
        print_sessions(result)
        harness.write_results("endurance_sessions", result, args.out)
    elif args.part == "slow-fsync":
        import endurance_fsync

        result = endurance_fsync.run(
            args.sessions, args.fsync_delay_ms / 1000.0, args.charge_seconds, args.keep
        )
        endurance_fsync.print_result(result)
        harness.write_results("endurance_fsync", result, args.out)
    elif args.part == "soak":
        result = soak(args)
        print_soak(result)
        harness.write_results("endurance_soak", result, args.out)
        if args.progress:
            _write_soak(
                args.progress, result["samples"], result["failures"], args.minutes, final=True
            )
    else:
        raise SystemExit(f"unknown part {args.part}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("part", choices=("sessions", "soak", "slow-fsync"))
    parser.add_argument("--minutes", type=float, default=120.0, help="soak duration")
    parser.add_argument(
        "--sample-seconds", type=float, default=60.0, help="soak: seconds between samples"
    )
    parser.add_argument(
        "--session-every", type=float, default=10.0, help="soak: seconds between sessions"
    )
    parser.add_argument(
        "--sessions", type=int, help="sessions (default 10 000) and slow-fsync (default 100)"
    )
    parser.add_argument(
        "--fsync-delay-ms", type=float, default=200.0, help="slow-fsync: delay of each fsync"
    )
    parser.add_argument(
        "--charge-seconds", type=float, default=1.0, help="slow-fsync: pause between commands"
    )
    parser.add_argument("--crashes", type=int, default=1_000, help="sessions: crash points")
    parser.add_argument("--seed", type=int, default=2027, help="sessions: random seed")
    parser.add_argument(
        "--stop-minimum-wait-ms",
        type=int,
        help="sessions: the module's stop_minimum_wait_ms (default: the module's default)",
    )
    parser.add_argument(
        "--big-journal", type=int, default=10_000, help="sessions: entries of the grown journal"
    )
    parser.add_argument("--progress", type=Path, help="soak: rewrite this JSON after each sample")
    args = parser.parse_args(argv)
    if args.sessions is None:
        args.sessions = 100 if args.part == "slow-fsync" else 10_000
    return harness.run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
