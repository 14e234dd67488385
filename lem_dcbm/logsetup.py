"""Log format: one line per event, each naming the module id."""

from __future__ import annotations

import logging
import os
import sys


class _ModuleIdFilter(logging.Filter):
    def __init__(self, module_id: str) -> None:
        super().__init__()
        self.module_id = module_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.module_id = self.module_id
        return True


def configure_logging(module_id: str, level: str | None = None) -> None:
    """Log to stderr as ``time level [module_id] logger: message``.

    The level comes from ``level``, else ``LEM_DCBM_LOG_LEVEL``, else INFO.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ModuleIdFilter(module_id))
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(module_id)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LEM_DCBM_LOG_LEVEL") or "INFO").upper())
    # urllib3 is chatty at DEBUG; keep it at WARNING.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # paho logs every failed reconnect attempt as an error; the bus logs the outage once
    # and the recovery once, so paho's own lines are wanted only when debugging.
    if root.level > logging.DEBUG:
        logging.getLogger("lem_dcbm.everest.bus.paho").setLevel(logging.CRITICAL)
