"""``bench/endurance.py`` runs its three parts in short form and finds nothing lost.

The real runs (10 000 sessions, hours of soak) are in ``bench/RESULTS.md``; here each part
runs a few sessions or seconds, so that the benchmark keeps working. Timings mean
nothing at this length and are not checked; the record audit is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def endurance(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "endurance.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=ROOT / "bench",
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_sessions_with_crashes_lose_duplicate_and_mix_up_nothing(tmp_path: Path) -> None:
    result = endurance(
        tmp_path, "sessions", "--sessions", "120", "--crashes", "25", "--big-journal", "200"
    )
    assert result["crashes"] == 25
    assert result["transactions_at_meter"] > 0
    assert (result["lost"], result["duplicate"], result["foreign"]) == (0, 0, 0)
    assert result["records_billed"] == result["transactions_at_meter"]


def test_the_soak_samples_the_module_process(tmp_path: Path) -> None:
    result = endurance(
        tmp_path,
        "soak",
        # 6 s: samples at 0, 2, 4 and 6 s, a session every 1.5 s (one takes well under).
        "--minutes",
        "0.1",
        "--sample-seconds",
        "2",
        "--session-every",
        "1.5",
    )
    assert len(result["samples"]) >= 3
    assert result["sessions"] >= 3
    assert result["failures"] == []
    assert result["journal_files_last"] >= 3
    first, last, _ = result["threads"]
    assert last <= first
    first, last, _ = result["fds"]
    assert last <= first


def test_slow_fsync_counts_the_journal_fsyncs_per_command(tmp_path: Path) -> None:
    result = endurance(
        tmp_path,
        "slow-fsync",
        "--sessions",
        "2",
        "--fsync-delay-ms",
        "50",
        "--charge-seconds",
        "0.2",
    )
    assert result["fsyncs_total"] > 0
    assert min(result["start_transaction"]["fsyncs"]) >= 2
    assert result["stop_transaction"]["latency"]["count"] == 2
