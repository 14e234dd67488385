"""The running module's log as a log shipper reads it: JSON lines, ISO 8601 times."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from lem_dcbm.harness import (
    MODULE_ID,
    Broker,
    Simulator,
    simulator_config,
    start_module,
    write_config,
)

pytestmark = pytest.mark.integration


def test_every_line_of_a_json_log_is_one_object_with_time_level_module_and_message(
    tmp_path: Path, mosquitto: Broker, simulator: Simulator
) -> None:
    config = write_config(tmp_path / "config.yaml", simulator_config(simulator))
    module = start_module(
        tmp_path, config, mosquitto.port, extra_args=["--log-format", "json"], log_level="DEBUG"
    )
    try:
        module.wait_ready()
    finally:
        assert module.terminate() == 0, module.log()

    lines = module.log().splitlines()
    assert len(lines) > 3
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert set(entry) >= {"time", "level", "module_id", "logger", "message"}
        assert entry["module_id"] == MODULE_ID
        assert datetime.datetime.fromisoformat(entry["time"]).utcoffset() is not None
    assert "DEBUG" in {entry["level"] for entry in entries}
