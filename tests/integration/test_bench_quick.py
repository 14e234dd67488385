"""Every benchmark runs to the end in ``--quick`` mode and writes its figures.

``bench/run_all.py --quick`` runs each script as a subprocess (the footprint one in
the background), with its JSON into a temporary directory, then writes the report.
Durations are far too short for the figures to mean anything, so nothing here checks
a timing: only that each run completed and wrote what the report needs.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# One worker runs them all (one run of the benchmarks); see ``results``.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("bench_quick"),
]

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ("publish_schedule", "startup", "command_latency", "footprint", "scale")


def run_quick(directory: Path) -> dict[str, Any]:
    """``run_all.py --quick`` into ``directory``: its exit code and the end of its output."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run_all.py"),
            "--quick",
            "--results-dir",
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=ROOT,
        check=False,
    )
    return {"code": done.returncode, "output": done.stdout[-3000:] + done.stderr[-5000:]}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The xdist_group mark keeps these tests on one worker (tests/conftest.py mends it for
    # pytest 9's node ids). Should a group ever be split, each worker that gets one of them
    # makes this fixture: the first runs the benchmarks, the others wait for it and read
    # the same directory.
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        directory = tmp_path_factory.mktemp("bench")
        outcome = run_quick(directory)
    else:
        directory = tmp_path_factory.getbasetemp().parent / f"bench-quick-{run_id}"
        with (directory.parent / f"{directory.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            saved = directory.parent / f"{directory.name}.outcome.json"
            if not saved.exists():
                directory.mkdir()
                saved.write_text(json.dumps(run_quick(directory)))
            outcome = json.loads(saved.read_text())
    assert outcome["code"] == 0, outcome["output"]
    return directory


def load(directory: Path, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    assert document["benchmark"] == name
    assert document["quick"] is True
    return document


def test_every_benchmark_exited_zero(results: Path) -> None:
    meta = json.loads((results / "run_all.json").read_text())
    codes = {name: meta["benchmarks"][name]["exit_code"] for name in BENCHMARKS}
    assert codes == dict.fromkeys(BENCHMARKS, 0)
    assert meta["machine"]["nproc"] >= 1


def test_publish_schedule_has_both_latencies_and_the_load(results: Path) -> None:
    runs = load(results, "publish_schedule")["runs"]
    assert [r["latency_ms"] for r in runs] == [0, 300, "load"]
    assert runs[-1]["start_stop_pairs"] >= 1
    for run in runs:
        assert run["count"] >= 2
        assert {"mean_s", "p1_s", "p99_s", "max_s", "lost_percent"} <= run.keys()


def test_startup_has_every_case(results: Path) -> None:
    summary = load(results, "startup")["summary"]
    assert set(summary) == {
        "ready_from_start",
        "late_from_meter",
        "late_from_start",
        "no_legal_from_start",
    }
    # The late meter cannot have been used before it started listening.
    assert summary["late_from_start"]["median_s"] >= load(results, "startup")["late_s"]


def test_command_latency_baseline_matches_the_module(results: Path) -> None:
    runs = load(results, "command_latency")["runs"]
    assert {r["variant"] for r in runs} == {
        "http_0ms",
        "http_50ms",
        "tls_0ms",
        "tls_50ms",
        "http_0ms_default_broker",
    }
    for run in runs:
        assert run["sequences"]["match"], run["sequences"]
        for command in ("start", "stop"):
            for side in ("module", "direct", "overhead"):
                assert {"p50_ms", "p99_ms"} <= run[command][side].keys()


def test_footprint_has_every_variant(results: Path) -> None:
    runs = load(results, "footprint")["runs"]
    assert {r["variant"] for r in runs} == {
        "http_idle",
        "http_transaction",
        "tls_idle",
        "tls_transaction",
    }
    for run in runs:
        assert run["cpu_s_per_hour"] > 0
        assert run["peak_rss_mb"] > 0
        assert run["threads_start"] > 0
        assert run["fds_start"] > 0
        assert run["meter_connections_total"] >= 1


def test_scale_has_both_sizes(results: Path) -> None:
    runs = load(results, "scale")["runs"]
    assert [r["size"] for r in runs] == [1, 3]
    for run in runs:
        assert len(run["per_module"]) == run["size"]
        assert run["modules_rss_mb"] > 0


def test_report_names_every_target(results: Path) -> None:
    report = (results / "RESULTS.quick.md").read_text()
    for figure in (
        "period mean, 300 ms meter latency",
        "first publication after a late meter answers",
        "module overhead per command, p50",
        "TCP connections to the meter",
        "peak RSS",
        "every period mean",
    ):
        assert figure in report
    assert "no results" not in report
