"""Sessions through the module process on a disk whose every journal fsync takes 200 ms.

**The slow disk.** ``bench/slow_fsync/sitecustomize.py`` wraps ``os.fsync`` in the module
process: after the real fsync of a file or directory under the module's state directory
it sleeps 200 ms. That is where eMMC (or an SD card) under wear-levelling is slow: a
``write`` lands in the page cache at once, and the fsync that makes it durable waits for
the device to flush, erase and remap blocks, which takes hundreds of milliseconds.
Every durable step of the journal is such an fsync (the entry file, then its directory),
so the wrapper delays exactly the calls the device would. A delaying file system (FUSE,
dm-delay) would need root and delays reads too, which eMMC does not; an injected file
layer in the package would change the code measured.

Each command's latency is measured at an EVerest consumer over MQTT; the fsyncs in the
module during that command are counted from the wrapper's log. The target per command
is ``fsync count x 200 ms + 100 ms``; the powermeter publications must keep their beat
(no gap over 1.05 s) whatever the commands wait for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import harness

SLOW_FSYNC_DIR = Path(__file__).resolve().parent / "slow_fsync"
MODULE_ID = "endurance_fsync"


def fsync_times(log: Path) -> list[float]:
    """End times (monotonic) of the delayed fsyncs so far."""
    if not log.exists():
        return []
    return [float(line.split(" ", 1)[0]) for line in log.read_text().splitlines() if line]


def run(sessions: int, delay_s: float, charge_s: float, keep: bool) -> dict[str, Any]:
    """``sessions`` start/stop pairs through the module with slow fsyncs; the figures."""
    commands: list[dict[str, Any]] = []
    with harness.Stack("endurance-fsync", keep=keep) as stack:
        broker = stack.start_broker()
        sim = stack.start_simulator("meter", min_transaction_s=0)
        workdir = stack.workdir / MODULE_ID
        state = workdir / "state"
        log = stack.workdir / "fsync.log"
        pythonpath = os.pathsep.join(
            p for p in (str(SLOW_FSYNC_DIR), os.environ.get("PYTHONPATH", "")) if p
        )
        env = {
            "PYTHONPATH": pythonpath,
            "LEM_BENCH_FSYNC_DELAY_S": str(delay_s),
            "LEM_BENCH_FSYNC_UNDER": str(state),
            "LEM_BENCH_FSYNC_LOG": str(log),
            "LEM_DCBM_STATE_DIR": str(state),
        }
        config = harness.write_module_config(
            workdir / "config.yaml", {"ip_address": "127.0.0.1", "port": sim.port}, MODULE_ID
        )
        module = stack.module(MODULE_ID, config, broker, log_level=None, env=env)
        caller = harness.Caller(broker, MODULE_ID)
        with harness.VarRecorder(broker) as recorder:
            recorder.wait_count([MODULE_ID], 1, 60)
            began = time.monotonic()
            for number in range(sessions):
                transaction_id = f"slow-{number:05d}"
                for command, args in (
                    ("start_transaction", harness.start_args(transaction_id)),
                    ("stop_transaction", {"transaction_id": transaction_id}),
                ):
                    sent = time.monotonic()
                    caller.call_ok(command, args)
                    answered = time.monotonic()
                    commands.append({"command": command, "sent": sent, "answered": answered})
                    time.sleep(charge_s)
            ended = time.monotonic()
            times = harness.window(recorder.times(MODULE_ID), began, ended)
        caller.close()
        stack.stop_module(module)
        fsyncs = fsync_times(log)
    for command in commands:
        command["fsyncs"] = sum(1 for t in fsyncs if command["sent"] <= t <= command["answered"])
        command["latency_s"] = command["answered"] - command["sent"]
        command["over_budget_s"] = command["latency_s"] - command["fsyncs"] * delay_s
    result: dict[str, Any] = {"sessions": sessions, "fsync_delay_s": delay_s}
    for name in ("start_transaction", "stop_transaction"):
        picked = [c for c in commands if c["command"] == name]
        result[name] = {
            "latency": harness.latency_stats([c["latency_s"] for c in picked]),
            "fsyncs": sorted({c["fsyncs"] for c in picked}),
            "over_budget": harness.latency_stats([c["over_budget_s"] for c in picked]),
        }
    result["fsyncs_total"] = len(fsyncs)
    result["publications"] = harness.period_stats(times)
    return result


def print_result(result: dict[str, Any]) -> None:
    """The table: latency per command, fsyncs, and the publication beat."""
    delay_ms = 1000 * result["fsync_delay_s"]
    rows = []
    for name in ("start_transaction", "stop_transaction"):
        figures = result[name]
        rows.append(
            [
                name,
                figures["latency"]["count"],
                figures["latency"]["p50_ms"],
                figures["latency"]["p99_ms"],
                figures["latency"]["max_ms"],
                "/".join(map(str, figures["fsyncs"])),
                figures["over_budget"]["p99_ms"],
                figures["over_budget"]["max_ms"],
            ]
        )
    harness.print_table(
        f"slow fsync: every journal fsync +{delay_ms:.0f} ms, {result['sessions']} sessions "
        f"({result['fsyncs_total']} fsyncs)",
        (
            "command",
            "count",
            "p50 ms",
            "p99 ms",
            "max ms",
            "fsyncs per command",
            f"p99 ms beyond fsyncs x {delay_ms:.0f}",
            "max ms beyond",
        ),
        rows,
    )
    beat = result["publications"]
    harness.print_table(
        "slow fsync: powermeter publications during the sessions",
        ("publications", "mean s", "p99 s", "largest gap s", "target"),
        [[beat["count"], beat["mean_s"], beat["p99_s"], beat["max_s"], "<= 1.05"]],
    )
