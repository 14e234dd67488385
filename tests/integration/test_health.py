"""The heartbeat file behind ``lem-dcbm health`` and the container's HEALTHCHECK."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lem_dcbm.harness import (
    Broker,
    Simulator,
    free_port,
    simulator_config,
    start_module,
    wait_until,
    write_config,
)
from lem_dcbm.health import (
    check_health,
    default_health_dir,
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
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")  # a file where the directory should be
    beat = blocked / "beat"
    with caplog.at_level(logging.WARNING, logger="lem_dcbm.health"):
        for _ in range(3):
            touch_health(beat)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    blocked.unlink()
    with caplog.at_level(logging.INFO, logger="lem_dcbm.health"):
        touch_health(beat)
    assert "writable again" in caplog.text
    assert check_health(beat)[0]


def test_path_is_per_module_id_in_the_directory_from_the_environment() -> None:
    env = {"LEM_DCBM_HEALTH_DIR": "/x"}
    assert health_file_path("powermeter_1", env) == Path("/x/powermeter_1.heartbeat")
    assert health_file_path("pm/2", env) == Path("/x/pm_2.heartbeat")
    mine = default_health_dir({})
    assert health_file_path("pm", {"LEM_DCBM_HEALTH_DIR": ""}) == mine / "pm.heartbeat"
    assert health_file_path("pm", {}).parent == mine


def test_the_default_folder_is_this_users_own_not_one_shared_tmp_folder() -> None:
    # /tmp/lem-dcbm-health was shared by every user and every module ever run there.
    assert default_health_dir({}) == Path(f"/tmp/lem-dcbm-health-{os.getuid()}")
    assert default_health_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path(
        "/run/user/7/lem-dcbm-health"
    )
    assert default_health_dir({"TMPDIR": "/var/tmp"}).parent == Path("/var/tmp")


def test_health_finds_the_module_s_own_folder_without_being_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module run by the systemd unit beats in /run/lem-dcbm; a shell beside it has no
    # LEM_DCBM_HEALTH_DIR, so health read its own (empty, or foreign) /tmp folder.
    service, image = tmp_path / "run-lem-dcbm", tmp_path / "var-lib-health"
    monkeypatch.setattr("lem_dcbm.health.WELL_KNOWN_HEALTH_DIRS", (service, image))
    monkeypatch.delenv("LEM_DCBM_HEALTH_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    assert health_main([]) == 1
    err = capsys.readouterr().err
    assert f"no heartbeat in {tmp_path / 'user' / 'lem-dcbm-health'}, {service}, {image}" in err

    touch_health(service / "powermeter_1.heartbeat")
    assert health_main([]) == 0
    assert capsys.readouterr().out.startswith("powermeter_1: healthy")
    assert health_main(["--module-id", "powermeter_1"]) == 0
    capsys.readouterr()

    # Its own folder and the service's both beat: both are checked, a stale one named.
    touch_health(tmp_path / "user" / "lem-dcbm-health" / "powermeter_2.heartbeat")
    _age(service / "powermeter_1.heartbeat", 60)
    assert health_main([]) == 1
    err = capsys.readouterr().err
    assert f"{service}: powermeter_1: unhealthy" in err
    # The variable, when set, is the one place looked at.
    monkeypatch.setenv("LEM_DCBM_HEALTH_DIR", str(image))
    assert health_main([]) == 1
    assert f"no heartbeat in {image} " in capsys.readouterr().err


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


@pytest.mark.parametrize("value", ["-1", "0", "soon"])
def test_max_age_must_be_a_positive_number(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        health_main(["--max-age", value])
    assert exit_info.value.code == 2
    assert "--max-age" in capsys.readouterr().err


def test_one_stale_module_makes_the_check_fail_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two modules in one directory: one module's beat never vouches for the other."""
    env = {"LEM_DCBM_HEALTH_DIR": str(tmp_path)}
    touch_health(health_file_path("pm_a", env))
    touch_health(health_file_path("pm_b", env))
    _age(health_file_path("pm_b", env), 30)
    assert health_main(["--dir", str(tmp_path), "--module-id", "pm_a"]) == 0
    assert capsys.readouterr().out.startswith("pm_a: healthy")
    assert health_main(["--dir", str(tmp_path), "--module-id", "pm_b"]) == 1
    assert capsys.readouterr().err.startswith("pm_b: unhealthy")
    assert health_main(["--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pm_b: unhealthy" in err
    assert "pm_a" not in err
    assert health_main(["--dir", str(tmp_path / "empty")]) == 1
    assert "no heartbeat in" in capsys.readouterr().err


def test_module_entry_reads_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "LEM_DCBM_HEALTH_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "lem_dcbm.health", "--module-id", "pm"]
    assert subprocess.run(command, env=env, capture_output=True).returncode == 1
    touch_health(health_file_path("pm", env))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _health(directory: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "lem_dcbm.health", "--dir", str(directory), "--max-age", "2", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_each_module_reports_its_own_meter_at_start_up_and_after(
    tmp_path: Path, mosquitto: Broker, simulator: Simulator
) -> None:
    """Two real modules: one meter never answers, the other answers and then goes away.

    Both say "unhealthy" the same way: no reading answered for longer than --max-age.
    """
    beats = tmp_path / "health"
    env = {"LEM_DCBM_HEALTH_DIR": str(beats)}
    good_config = write_config(tmp_path / "good.yaml", simulator_config(simulator), "pm_good")
    lost = simulator_config(simulator, ip_address="127.0.0.1", port=free_port())
    lost_config = write_config(tmp_path / "lost.yaml", lost, "pm_lost")
    with (
        start_module(
            tmp_path / "good", good_config, mosquitto.port, env=env, module_id="pm_good"
        ) as good,
        start_module(tmp_path / "lost", lost_config, mosquitto.port, env=env, module_id="pm_lost"),
    ):
        good.wait_ready()
        assert _health(beats, "--module-id", "pm_good")[0] == 0
        code, said = _health(beats, "--module-id", "pm_lost")
        assert code == 1
        assert "pm_lost: unhealthy: running, but its meter has not answered yet" in said
        code, said = _health(beats)
        assert code == 1
        assert "pm_lost" in said
        # The good module's meter goes away after start-up: unhealthy within --max-age.
        simulator.stop()
        wait_until(
            lambda: _health(beats, "--module-id", "pm_good")[0] == 1,
            timeout=15,
            interval=0.5,
            what="pm_good unhealthy after its meter went away",
        )
