"""The heartbeat file: made when missing, dated now on every touch, failures logged once."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from lem_dcbm.health import touch_health


def test_a_missing_folder_and_file_are_made(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "m.heartbeat"
    touch_health(path)
    assert path.is_file()


def test_an_existing_heartbeat_is_dated_now(tmp_path: Path) -> None:
    path = tmp_path / "m.heartbeat"
    path.touch()
    os.utime(path, (0, 0))
    before = time.time()
    touch_health(path)
    assert path.stat().st_mtime >= before - 1


def test_a_failure_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "m.heartbeat"  # its folder is a file
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        touch_health(path)
        touch_health(path)
    assert sum("cannot write heartbeat file" in r.message for r in caplog.records) == 1
