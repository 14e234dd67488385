"""The harness finds mosquitto where package managers put it, or says how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lem_dcbm.harness import HarnessError, broker, mosquitto_binary


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def no_mosquitto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH and the sbin folders lead to empty directories; $LEM_MOSQUITTO is unset."""
    monkeypatch.delenv(broker.MOSQUITTO_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(broker, "SBIN_DIRS", (str(tmp_path / "sbin"), str(tmp_path / "lsbin")))
    return tmp_path


def test_mosquitto_on_path_comes_first(no_mosquitto: Path) -> None:
    on_path = executable(no_mosquitto / "bin" / "mosquitto")
    executable(no_mosquitto / "sbin" / "mosquitto")
    assert mosquitto_binary() == str(on_path)


def test_mosquitto_in_an_sbin_folder_is_found(no_mosquitto: Path) -> None:
    in_sbin = executable(no_mosquitto / "lsbin" / "mosquitto")
    assert mosquitto_binary() == str(in_sbin)


def test_the_environment_names_mosquitto(
    no_mosquitto: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(broker.MOSQUITTO_ENV, "/opt/mq/mosquitto")
    assert mosquitto_binary() == "/opt/mq/mosquitto"


def test_no_mosquitto_is_a_clear_error(no_mosquitto: Path) -> None:
    assert broker.find_mosquitto() is None
    with pytest.raises(HarnessError, match=r"mosquitto not found on PATH or in .*sbin.*install"):
        mosquitto_binary()
    with pytest.raises(HarnessError, match="mosquitto not found"):
        broker.Broker(no_mosquitto / "work").start()
