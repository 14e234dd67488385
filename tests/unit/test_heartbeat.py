"""The running module's ``Heartbeat``: one kept descriptor, and the full road on any change."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from lem_dcbm.health import Heartbeat, check_health

OLD = 1_000_000_000  # 2001


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def beat(tmp_path: Path) -> Path:
    directory = tmp_path / "health"
    directory.mkdir(mode=0o700)
    return directory / "pm.heartbeat"


def test_every_touch_freshens_the_beat_with_one_kept_descriptor(beat: Path) -> None:
    heartbeat = Heartbeat(beat)
    before = _open_fds()
    heartbeat.touch()
    assert _open_fds() == before + 1
    for _ in range(5):
        os.utime(beat, (OLD, OLD))
        heartbeat.touch()
        assert time.time() - beat.stat().st_mtime < 60
    assert _open_fds() == before + 1
    heartbeat.close()
    assert _open_fds() == before
    assert check_health(beat)[0]


def test_a_removed_beat_is_written_again(beat: Path) -> None:
    heartbeat = Heartbeat(beat)
    heartbeat.touch()
    beat.unlink()
    heartbeat.touch()
    assert check_health(beat)[0]
    heartbeat.close()


def test_a_beat_replaced_by_a_file_of_the_same_name_is_the_one_touched(beat: Path) -> None:
    heartbeat = Heartbeat(beat)
    heartbeat.touch()
    beat.unlink()
    beat.write_text("")
    os.utime(beat, (OLD, OLD))
    heartbeat.touch()
    assert check_health(beat)[0]
    heartbeat.close()


def test_a_link_planted_after_the_first_beat_is_refused_not_followed(
    beat: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "victim.conf"
    target.write_text("precious\n")
    os.utime(target, (OLD, OLD))
    heartbeat = Heartbeat(beat)
    heartbeat.touch()
    beat.unlink()
    beat.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        heartbeat.touch()
        heartbeat.touch()
    assert target.stat().st_mtime == OLD
    assert caplog.text.count("symbolic link") == 1  # once, not once a beat
    assert not check_health(beat)[0]
    # Once the link is gone the beats come back.
    beat.unlink()
    heartbeat.touch()
    assert check_health(beat)[0]
    heartbeat.close()
