"""The heartbeat is never written, nor read, through a symbolic link.

The module runs as root in many installations, and its default heartbeat directory is
under /tmp: a link planted at its heartbeat path must not make it touch another file,
nor make ``health`` vouch for the module from that file.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator, simulator_config, start_module, write_config
from lem_dcbm.harness.waiting import wait_until
from lem_dcbm.health import check_all, check_health, register_health, touch_health

pytestmark = pytest.mark.integration

OLD = 1_000_000_000  # 2001: a time the target file must keep


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "victim.conf"
    target.write_text("precious\n")
    os.utime(target, (OLD, OLD))
    return target


def test_a_running_module_does_not_touch_a_planted_links_target(
    tmp_path: Path, simulator: Simulator, mosquitto: Broker
) -> None:
    target = _target(tmp_path)
    config = write_config(tmp_path / "config.yaml", simulator_config(simulator))
    with start_module(tmp_path / "module", config, mosquitto.port) as module:
        module.wait_ready()
        beat = module.health_path
        assert beat is not None
        assert stat.S_IMODE(beat.parent.stat().st_mode) == 0o700
        beat.unlink()
        beat.symlink_to(target)
        wait_until(
            lambda: "is a symbolic link; not followed" in module.log(), 15, what="the refusal"
        )
        healthy, reason = check_health(beat, max_age_s=3600 * 24 * 365 * 100)
        assert not healthy
        assert "symbolic link" in reason
        assert not check_all(beat.parent, max_age_s=3600 * 24 * 365 * 100)[0]
        assert module.process.poll() is None
    assert target.stat().st_mtime == OLD
    assert target.read_text() == "precious\n"
    said = [line for line in module.log().splitlines() if "cannot write heartbeat" in line]
    assert len(said) == 1  # once, not once a second


def test_touch_never_follows_a_link(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = _target(tmp_path)
    directory = tmp_path / "health"
    directory.mkdir(mode=0o700)
    beat = directory / "pm.heartbeat"
    beat.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        touch_health(beat)
    assert target.stat().st_mtime == OLD
    assert "symbolic link" in caplog.text
    assert not check_health(beat)[0]


def test_a_fresh_target_behind_a_link_is_not_healthy(tmp_path: Path) -> None:
    target = tmp_path / "fresh"
    target.write_text("")
    beat = tmp_path / "pm.heartbeat"
    beat.symlink_to(target)
    healthy, reason = check_health(beat)
    assert not healthy
    assert reason == f"unhealthy: heartbeat file {beat} is a symbolic link (not followed)"


def test_a_directory_that_is_a_link_or_open_to_all_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(real)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        touch_health(linked / "pm.heartbeat")
        touch_health(shared / "pm.heartbeat")
    assert not (real / "pm.heartbeat").exists()
    assert not (shared / "pm.heartbeat").exists()
    assert "is a symbolic link" in caplog.text
    assert "writable by every user" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o755)
    os.chown(foreign, 12345, 12345)
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        touch_health(foreign / "pm.heartbeat")
    assert not (foreign / "pm.heartbeat").exists()
    assert "belongs to user 12345" in caplog.text


def test_a_fifo_at_the_path_does_not_block(tmp_path: Path) -> None:
    directory = tmp_path / "health"
    directory.mkdir(mode=0o700)
    beat = directory / "pm.heartbeat"
    os.mkfifo(beat)
    touch_health(beat)  # returns: O_NONBLOCK, and a FIFO is no heartbeat
    assert not check_health(beat)[0]


def test_at_start_a_link_at_the_path_is_removed_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = _target(tmp_path)
    directory = tmp_path / "health"
    directory.mkdir(mode=0o700)
    beat = directory / "pm.heartbeat"
    beat.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        register_health(beat)
    assert "removed a symbolic link at the heartbeat path" in caplog.text
    assert not beat.is_symlink()
    assert beat.stat().st_mtime == 0  # a real beat, dated 1970
    assert target.stat().st_mtime == OLD
    assert target.exists()
