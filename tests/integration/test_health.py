"""The heartbeat file behind ``lem-dcbm health`` and the container's HEALTHCHECK."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lem_dcbm.health import (
    DEFAULT_HEALTH_FILE,
    check_health,
    health_file_path,
    health_main,
    touch_health,
)

pytestmark = pytest.mark.integration


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    touch_health(beat)
    healthy, reason = check_health(beat)
    assert healthy
    assert reason.startswith("healthy")


def test_missing_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    healthy, reason = check_health(tmp_path / "nothing")
    assert not healthy
    assert "no heartbeat file" in reason


def test_stale_heartbeat_is_unhealthy_and_a_new_beat_revives_it(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    touch_health(beat)
    _age(beat, 11)
    healthy, reason = check_health(beat, max_age_s=10)
    assert not healthy
    assert "11." in reason
    assert "limit 10 s" in reason
    touch_health(beat)
    assert check_health(beat, max_age_s=10)[0]


def test_age_limit_is_respected(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    touch_health(beat)
    _age(beat, 5)
    assert check_health(beat, max_age_s=10)[0]
    assert not check_health(beat, max_age_s=3)[0]


def test_heartbeat_from_the_future_counts_as_fresh(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    touch_health(beat)
    _age(beat, -3600)
    assert check_health(beat)[0]


def test_unwritable_heartbeat_warns_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    beat = tmp_path / "missing-dir" / "beat"
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        for _ in range(3):
            touch_health(beat)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    (tmp_path / "missing-dir").mkdir()
    with caplog.at_level(logging.INFO, logger="lem_dcbm.health"):
        touch_health(beat)
    assert "writable again" in caplog.text
    assert check_health(beat)[0]


def test_path_comes_from_environment() -> None:
    assert health_file_path({"LEM_DCBM_HEALTH_FILE": "/x/beat"}) == Path("/x/beat")
    assert health_file_path({"LEM_DCBM_HEALTH_FILE": ""}) == DEFAULT_HEALTH_FILE
    assert health_file_path({}) == DEFAULT_HEALTH_FILE


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beat = tmp_path / "beat"
    assert health_main(["--file", str(beat)]) == 1
    assert "no heartbeat file" in capsys.readouterr().err
    touch_health(beat)
    assert health_main(["--file", str(beat)]) == 0
    assert capsys.readouterr().out.startswith("healthy")
    _age(beat, 30)
    assert health_main(["--file", str(beat), "--max-age", "20"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "limit 20 s" in err


def test_module_entry_reads_the_environment(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    env = {**os.environ, "LEM_DCBM_HEALTH_FILE": str(beat)}
    command = [sys.executable, "-m", "lem_dcbm.health"]
    assert subprocess.run(command, env=env, capture_output=True).returncode == 1
    touch_health(beat)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
