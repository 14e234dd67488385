"""Log format: one line per event, each naming the module id, with an ISO 8601 time.

Two formats: ``text`` for people (``time level [module_id] logger: message``) and
``json`` for log shippers (one JSON object per line). The level and the format come from
``--log-level``/``--log-format``, else ``LEM_DCBM_LOG_LEVEL``/``LEM_DCBM_LOG_FORMAT``
(what the EVerest manager's environment can set), else INFO and text.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from collections.abc import Mapping

from lem_dcbm.errors import ConfigError

#: The levels ``--log-level`` and ``LEM_DCBM_LOG_LEVEL`` take.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The formats ``--log-format`` and ``LEM_DCBM_LOG_FORMAT`` take.
LOG_FORMATS = ("text", "json")


class _ModuleIdFilter(logging.Filter):
    def __init__(self, module_id: str) -> None:
        super().__init__()
        self.module_id = module_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.module_id = self.module_id
        return True


def iso_time(record: logging.LogRecord) -> str:
    """The record's time in ISO 8601 with milliseconds and this host's UTC offset."""
    moment = datetime.datetime.fromtimestamp(record.created).astimezone()
    return moment.isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``2026-11-29T06:34:12.123+00:00 INFO [powermeter_1] lem_dcbm.service: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(module_id)s] %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 with the UTC offset, whatever ``datefmt`` says."""
        return iso_time(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, module_id, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object (newlines in the message are escaped)."""
        entry = {
            "time": iso_time(record),
            "level": record.levelname,
            "module_id": getattr(record, "module_id", ""),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def log_options(
    level: str | None, log_format: str | None, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """The level and format from the options, else the environment, else INFO and text.

    A value that is neither raises ``ConfigError`` naming the option or variable.
    """
    env = os.environ if env is None else env
    chosen_level = _choose(level, "--log-level", "LEM_DCBM_LOG_LEVEL", env, LOG_LEVELS)
    chosen_format = _choose(log_format, "--log-format", "LEM_DCBM_LOG_FORMAT", env, LOG_FORMATS)
    return chosen_level or "INFO", chosen_format or "text"


def _choose(
    flag: str | None,
    flag_name: str,
    variable: str,
    env: Mapping[str, str],
    allowed: tuple[str, ...],
) -> str | None:
    key, value = (flag_name, flag) if flag else (variable, env.get(variable) or None)
    if value is None:
        return None
    folded = value.upper() if allowed is LOG_LEVELS else value.lower()
    if folded not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(allowed)}; got {value!r}")
    return folded


def configure_logging(module_id: str, level: str | None = None, log_format: str = "text") -> None:
    """Log to stderr, each line naming ``module_id``, in ``log_format`` (text or json).

    The level comes from ``level``, else ``LEM_DCBM_LOG_LEVEL``, else INFO.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ModuleIdFilter(module_id))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LEM_DCBM_LOG_LEVEL") or "INFO").upper())
    # paho logs every failed reconnect attempt as an error; the bus logs the outage once
    # and the recovery once, so paho's own lines are wanted only when debugging.
    if root.level > logging.DEBUG:
        logging.getLogger("lem_dcbm.everest.bus.paho").setLevel(logging.CRITICAL)


class HeldRecords(logging.Handler):
    """Holds what a logger says before logging is set up (the module id is not known yet).

    ``with HeldRecords("lem_dcbm.config") as held:`` keeps that logger's records (and
    stops them reaching Python's bare last-resort output); ``held.replay()`` hands them
    to the handlers configured since, ``held.messages`` are their texts.
    """

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.logger = logging.getLogger(logger)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self.records.append(record)

    def __enter__(self) -> HeldRecords:
        self.logger.addHandler(self)
        self.propagate, self.logger.propagate = self.logger.propagate, False
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.propagate = self.propagate

    @property
    def messages(self) -> list[str]:
        """The held records' messages."""
        return [record.getMessage() for record in self.records]

    def replay(self) -> None:
        """Log the held records again, through the handlers set up now."""
        for record in self.records:
            self.logger.handle(record)
        self.records.clear()
