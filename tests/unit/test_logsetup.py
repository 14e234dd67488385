"""Log lines: ISO 8601 times with the UTC offset, text or JSON, level and format chosen."""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Iterator

import pytest

from lem_dcbm.errors import ConfigError
from lem_dcbm.logsetup import configure_logging, log_options

ISO_WITH_OFFSET = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    paho = logging.getLogger("lem_dcbm.everest.bus.paho")
    paho_level = paho.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    paho.setLevel(paho_level)


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_carry_an_iso_8601_time_with_offset_and_the_module_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("powermeter_1", "INFO", "text")

    logging.getLogger("lem_dcbm.test").warning("meter %s lost", "10.0.0.2")

    line = capsys.readouterr().err
    assert re.fullmatch(
        ISO_WITH_OFFSET + r" WARNING \[powermeter_1\] lem_dcbm\.test: meter 10\.0\.0\.2 lost\n",
        line,
    )
    stamp = datetime.datetime.fromisoformat(line.split(" ")[0])
    assert stamp.utcoffset() is not None
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - stamp).total_seconds()) < 60


@pytest.mark.usefixtures("restore_logging")
def test_json_format_is_one_object_per_line_for_log_shippers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("powermeter_2", "DEBUG", "json")
    logger = logging.getLogger("lem_dcbm.test")

    logger.debug("first\nsecond")
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("failed")

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert re.fullmatch(ISO_WITH_OFFSET, first["time"])
    assert {k: v for k, v in first.items() if k != "time"} == {
        "level": "DEBUG",
        "module_id": "powermeter_2",
        "logger": "lem_dcbm.test",
        "message": "first\nsecond",
    }
    assert second["level"] == "ERROR"
    assert "ValueError: broken" in second["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_level_filters_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("m", "WARNING")

    logging.getLogger("lem_dcbm.test").info("hidden")
    logging.getLogger("lem_dcbm.test").error("shown")

    assert [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines()] == [
        "ERROR [m] lem_dcbm.test: shown"
    ]


@pytest.mark.parametrize(
    ("level", "log_format", "env", "expected"),
    [
        (None, None, {}, ("INFO", "text")),
        (
            None,
            None,
            {"LEM_DCBM_LOG_LEVEL": "debug", "LEM_DCBM_LOG_FORMAT": "JSON"},
            ("DEBUG", "json"),
        ),
        (
            "ERROR",
            "text",
            {"LEM_DCBM_LOG_LEVEL": "debug", "LEM_DCBM_LOG_FORMAT": "json"},
            ("ERROR", "text"),
        ),
    ],
)
def test_options_win_over_the_environment(
    level: str | None, log_format: str | None, env: dict[str, str], expected: tuple[str, str]
) -> None:
    assert log_options(level, log_format, env) == expected


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"LEM_DCBM_LOG_LEVEL": "loud"}, "LEM_DCBM_LOG_LEVEL"),
        ({"LEM_DCBM_LOG_FORMAT": "xml"}, "LEM_DCBM_LOG_FORMAT"),
    ],
)
def test_a_bad_variable_is_a_config_error_naming_it(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        log_options(None, None, env)

    assert caught.value.key == key
    assert str(caught.value).startswith(f"environment variable '{key}': must be one of")
