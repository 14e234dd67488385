"""``RESULTS.md`` from the benchmarks' JSON: targets, the C++ module's figures, every table.

The analysis of missed targets and the profile are written by hand in
``bench/analysis.md`` and included as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import command_latency
import footprint
import harness
import publish_schedule
import scale
import startup

BENCH = Path(__file__).resolve().parent
ANALYSIS = BENCH / "analysis.md"

#: The C++ LemDCBM400600 module's figures from earlier runs (2 cores, EVerest's meter mock),
#: shown where a run could not measure it; footprint.py measures CPU and memory beside
#: lem-dcbm where the module is built, and then those figures replace these.
CPP = {
    "period_fast": "1.004 s",
    "period_slow": "1.318 s (max 2.5 s)",
    "lost_slow": "23 %",
    "first_ready": "11.6 s",
    "first_no_legal": "262 s",
    "connections": "3 600 / h (121 in 120 s; TLS: a full handshake each)",
    "cpu": "~0.0 % (measured 2026-12-05, not by this run)",
    "rss": "13.6 MB (measured 2026-12-05, not by this run)",
}
#: Peak RSS (VmHWM) and CPU at 1 Hz of every footprint variant, idle and with a transaction.
RSS_TARGET_MB = 30.0
CPU_TARGET_PERCENT = 0.15

#: Most RSS growth after the first tenth of the footprint run that counts as none.
RSS_GROWTH_LIMIT_KB = 512


def load(results_dir: Path, name: str) -> dict[str, Any] | None:
    """One benchmark's JSON, or None when it did not write any."""
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(harness.fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool, miss: str) -> str:
    """``met`` or ``**missed** by ...``."""
    return "met" if ok else f"**missed** by {miss}"


def by_latency(schedule: dict[str, Any], latency_ms: int) -> dict[str, Any]:
    """The publish_schedule run at ``latency_ms``."""
    return next(r for r in schedule["runs"] if r["latency_ms"] == latency_ms)


def schedule_rows(schedule: dict[str, Any]) -> list[list[str]]:
    """Summary rows of the publication period."""
    rows = []
    for latency_ms, cpp in ((0, CPP["period_fast"]), (300, CPP["period_slow"])):
        run = by_latency(schedule, latency_ms)
        mean = run["mean_s"]
        off = abs(mean - 1.0)
        rows.append(
            [
                f"period mean, {latency_ms} ms meter latency",
                "1.000 ± 0.005 s",
                cpp,
                f"{mean:.4f} s",
                verdict(off <= 0.005, f"{(off - 0.005) * 1000:.1f} ms"),
            ]
        )
        spread = max(abs(run["p1_s"] - 1.0), abs(run["p99_s"] - 1.0))
        rows.append(
            [
                f"period p1..p99, {latency_ms} ms meter latency",
                "within 1.000 ± 0.050 s",
                "—",
                f"{run['p1_s']:.3f}..{run['p99_s']:.3f} s (worst {run['max_s']:.3f} s)",
                verdict(spread <= 0.05, f"{(spread - 0.05) * 1000:.0f} ms"),
            ]
        )
        missing = run["expected_count"] - run["count"]
        rows.append(
            [
                f"publications in {run['duration_s']:.0f} s, {latency_ms} ms latency",
                f"{run['expected_count']:.0f} ± 1",
                CPP["lost_slow"] + " lost" if latency_ms else "—",
                f"{run['count']} ({run['lost_percent']:.1f} % lost)",
                verdict(abs(missing) <= 1, f"{abs(missing) - 1:.0f} publications"),
            ]
        )
    load = next((r for r in schedule["runs"] if r["latency_ms"] == "load"), None)
    if load is not None:
        spread = max(abs(load["p1_s"] - 1.0), abs(load["p99_s"] - 1.0), abs(load["max_s"] - 1.0))
        rows.append(
            [
                "period under load (500 ms settings writes and record fetches, "
                f"a start/stop pair every 5 s, {load.get('start_stop_pairs', 0)} pairs)",
                "every period 1.000 ± 0.050 s",
                "—",
                f"{load['p1_s']:.3f}..{load['p99_s']:.3f} s (worst {load['max_s']:.3f} s)",
                verdict(spread <= 0.05, f"{(spread - 0.05) * 1000:.0f} ms"),
            ]
        )
    return rows


def startup_rows(startup: dict[str, Any]) -> list[list[str]]:
    """Summary rows of the time to the first publication."""
    summary = startup["summary"]
    rows = []
    for key, label, cpp in (
        ("ready_from_start", "first publication after start, ready meter", CPP["first_ready"]),
        ("late_from_meter", "first publication after a late meter answers", "—"),
    ):
        figures = summary[key]
        rows.append(
            [
                label,
                "≤ 1.5 s",
                cpp,
                f"{figures['median_s']:.2f} s median, {figures['max_s']:.2f} s worst",
                verdict(figures["max_s"] <= 1.5, f"{figures['max_s'] - 1.5:.2f} s"),
            ]
        )
    figures = summary["no_legal_from_start"]
    rows.append(
        [
            "first publication, meter answers 404 on /legal",
            "—",
            CPP["first_no_legal"],
            f"{figures['median_s']:.2f} s median, {figures['max_s']:.2f} s worst",
            "—",
        ]
    )
    return rows


def latency_rows(latency: dict[str, Any]) -> list[list[str]]:
    """Summary rows of the module's overhead per command (broker with Nagle off)."""
    runs = [r for r in latency["runs"] if r["broker_no_delay"]]
    rows = []
    for stat, limit in (("p50_ms", 3.0), ("p99_ms", 10.0)):
        worst_value, worst_where = max(
            (r[c]["overhead"][stat], f"{r['variant']} {c}") for r in runs for c in ("start", "stop")
        )
        best_value = min(r[c]["overhead"][stat] for r in runs for c in ("start", "stop"))
        rows.append(
            [
                f"module overhead per command, {stat[:3]} (broker without Nagle)",
                f"≤ {limit:.0f} ms",
                "—",
                f"{best_value:.1f}..{worst_value:.1f} ms (worst: {worst_where})",
                verdict(worst_value <= limit, f"{worst_value - limit:.1f} ms"),
            ]
        )
    return rows


def split_runs(footprint: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """lem-dcbm's runs and the C++ module's (empty when it was not measured)."""
    runs = footprint["runs"]
    ours = [r for r in runs if r.get("implementation", "lem-dcbm") == "lem-dcbm"]
    return ours, [r for r in runs if r.get("implementation") == "cpp"]


def _span(runs: list[dict[str, Any]], key: str, unit: str, digits: int) -> str:
    low = min(r[key] for r in runs)
    high = max(r[key] for r in runs)
    return f"{low:.{digits}f}..{high:.{digits}f} {unit}"


def footprint_rows(footprint: dict[str, Any]) -> list[list[str]]:
    """Summary rows of connections, CPU, memory and growth."""
    runs, cpp = split_runs(footprint)
    per_hour = max(r["meter_connections_per_hour"] for r in runs)
    cpu = max(r["cpu_percent"] for r in runs)
    rss = max(r["peak_rss_mb"] for r in runs)
    growth = max(r["rss_growth_kb"] for r in runs)
    threads_grew = [r["variant"] for r in runs if r["threads_end"] > r["threads_start"]]
    fds_grew = [r["variant"] for r in runs if r["fds_end"] > r["fds_start"]]
    grew = threads_grew or fds_grew or growth > RSS_GROWTH_LIMIT_KB
    seconds = max(r["duration_s"] for r in runs)
    span = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
    cpp_cpu = _span(cpp, "cpu_percent", "% (same run)", 2) if cpp else CPP["cpu"]
    cpp_rss = _span(cpp, "peak_rss_mb", "MB (same run)", 1) if cpp else CPP["rss"]
    return [
        [
            "TCP connections to the meter, steady state",
            "≤ 2 / h",
            CPP["connections"],
            f"{per_hour:.1f} / h (worst variant; "
            f"{max(r['meter_connections_total'] for r in runs)} in all per module)",
            verdict(per_hour <= 2, f"{per_hour - 2:.1f} / h"),
        ],
        [
            "CPU at 1 Hz, % of one core (HTTP and TLS, idle and with a transaction)",
            f"≤ {CPU_TARGET_PERCENT} %",
            cpp_cpu,
            _span(runs, "cpu_percent", "%", 2),
            verdict(cpu <= CPU_TARGET_PERCENT, f"{cpu - CPU_TARGET_PERCENT:.2f} points"),
        ],
        [
            "peak RSS (VmHWM; HTTP and TLS, idle and with a transaction)",
            f"≤ {RSS_TARGET_MB:.0f} MB",
            cpp_rss,
            _span(runs, "peak_rss_mb", "MB", 1),
            verdict(rss <= RSS_TARGET_MB, f"{rss - RSS_TARGET_MB:.1f} MB"),
        ],
        [
            f"growth over {span} (RSS, threads, fds)",
            f"none (RSS ≤ {RSS_GROWTH_LIMIT_KB} kB)",
            "—",
            f"RSS +{growth} kB worst; threads "
            + ", ".join(f"{r['threads_start']}→{r['threads_end']}" for r in runs)
            + "; fds "
            + ", ".join(f"{r['fds_start']}→{r['fds_end']}" for r in runs),
            verdict(
                not grew,
                f"RSS +{growth} kB, threads in {threads_grew}, fds in {fds_grew}",
            ),
        ],
    ]


def scale_rows(scale: dict[str, Any], nproc: int) -> list[list[str]]:
    """Summary row of the largest scale run."""
    run = max(scale["runs"], key=lambda r: int(r["size"]))
    off = run["worst_mean_deviation_s"]
    return [
        [
            f"{run['size']} modules on {nproc} cores: every period mean",
            "1.000 ± 0.010 s",
            "—",
            f"{run['min_mean_s']:.4f}..{run['max_mean_s']:.4f} s",
            verdict(off <= 0.01, f"{(off - 0.01) * 1000:.1f} ms"),
        ]
    ]


def summary_section(results: dict[str, dict[str, Any] | None], nproc: int) -> str:
    """The targets table."""
    builders: tuple[tuple[str, Callable[[dict[str, Any]], list[list[str]]]], ...] = (
        ("publish_schedule", schedule_rows),
        ("startup", startup_rows),
        ("command_latency", latency_rows),
        ("footprint", footprint_rows),
        ("scale", lambda data: scale_rows(data, nproc)),
    )
    rows: list[list[str]] = []
    for name, build in builders:
        data = results.get(name)
        if data is None:
            rows.append([name, "—", "—", "no results (the benchmark failed)", "—"])
        else:
            rows.extend(build(data))
    return md_table(["figure", "target", "C++ module", "this module", "verdict"], rows)


def detail_sections(results: dict[str, dict[str, Any] | None]) -> list[str]:
    """One section per benchmark with all of its figures (the scripts' own tables)."""
    parts: list[str] = []
    schedule = results.get("publish_schedule")
    if schedule:
        parts += [
            "### publish_schedule.py: period of the powermeter var",
            md_table(publish_schedule.HEADERS, publish_schedule.rows(schedule["runs"]), 4),
            f"Window: {schedule['runs'][0]['duration_s']:.0f} s per latency, both modules at "
            "once; times are receive times at an MQTT subscriber.",
        ]
    started = results.get("startup")
    if started:
        parts += [
            "### startup.py: time to the first publication",
            md_table(startup.HEADERS, startup.rows(started["summary"])),
            f"`late`: the simulator starts on the reserved port {started['late_s']:.0f} s "
            "after the module plus 0, 1/4, 1/2 and 3/4 s in turn (to meet the module's "
            "once-a-second init retries at different phases); `from_meter` counts from the "
            "moment it listens. `no_legal`: the meter answers 404 on `/legal`.",
        ]
    latency = results.get("command_latency")
    if latency:
        same = all(r["sequences"]["match"] for r in latency["runs"])
        parts += [
            "### command_latency.py: start/stop round trips, ms",
            md_table(command_latency.HEADERS, command_latency.rows(latency["runs"]), 1),
            f"{latency['runs'][0]['pairs']} pairs per variant. Overhead = module round trip "
            "(call published to result received, through mosquitto) minus the same meter "
            "requests sent directly, paired pair by pair. Requests per command, checked "
            "against the simulator's counts: "
            + ("identical in every variant." if same else "**different** (see the JSON)."),
        ]
    steady = results.get("footprint")
    if steady:
        cpp = steady.get("cpp", {})
        beside = (
            "EVerest's C++ LemDCBM400600 ran beside them under one manager on the same "
            f"broker, each variant with a simulator of its own ({cpp.get('build')})."
            if cpp.get("measured")
            else "The C++ module was not measured in this run: "
            f"{cpp.get('note') or 'the run predates the C++ measurement'}."
        )
        parts += [
            "### footprint.py: steady state at 1 Hz",
            md_table(footprint.HEADERS, footprint.rows(steady["runs"])),
            f"{steady['runs'][0]['duration_s']:.0f} s of steady state, the four modules at "
            f"once, each with its own simulator. {beside}",
        ]
    many = results.get("scale")
    if many:
        parts += [
            "### scale.py: N modules on one broker",
            md_table(scale.HEADERS, scale.rows(many["runs"]), 4),
            f"{many['runs'][0]['duration_s']:.0f} s window per size; CPU in % of one core "
            "summed over the group.",
        ]
    return parts


def run_section(meta: dict[str, Any]) -> str:
    """Machine, date, commit and the wall time of each benchmark."""
    m = meta["machine"]
    bench = meta["benchmarks"]
    lines = [
        f"- date: {meta['started']}",
        f"- commit: `{meta['commit']}`",
        f"- machine: {m['nproc']} × {m['cpu_model']}, {m['memory_gb']} GB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}, {m['mosquitto']}",
        f"- mode: {'quick' if meta['quick'] else 'full'}; total wall time "
        f"{bench['total_wall_s'] / 60:.1f} min",
        "- wall time per benchmark: "
        + ", ".join(
            f"{name} {v['wall_s']:.0f} s" + ("" if v["exit_code"] == 0 else " (FAILED)")
            for name, v in bench.items()
            if isinstance(v, dict)
        ),
        "- footprint.py ran in the background during publish_schedule.py, startup.py and "
        "command_latency.py (lem-dcbm's four modules at 1 Hz and, where it is built, the "
        "C++ module's four: a few tenths of a percent of a core each); scale.py ran alone.",
    ]
    return "\n".join(lines)


def write_report(meta: dict[str, Any], target: Path, results_dir: Path) -> None:
    """Write the report on the JSON in ``results_dir`` to ``target``."""
    names = ("publish_schedule", "startup", "command_latency", "footprint", "scale")
    results = {name: load(results_dir, name) for name in names}
    parts = [
        "# Benchmark results",
        "Generated by `bench/run_all.py` from one run; every figure below comes from "
        "`bench/results/*.json` of that run. The C++ figures are those of EVerest's "
        "LemDCBM400600 module: CPU and memory from the same run where the module is built "
        "(footprint.py says whether it was), the others from earlier runs on a 2-core "
        "machine against EVerest's meter mock.",
        "## Run",
        run_section(meta),
        "## Targets",
        summary_section(results, int(meta["machine"]["nproc"])),
        "## Figures",
        *detail_sections(results),
    ]
    if ANALYSIS.exists():
        parts.append(ANALYSIS.read_text().strip())
    target.write_text("\n\n".join(parts) + "\n")
