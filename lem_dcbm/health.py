"""Liveness heartbeat: the running module touches a file, ``lem-dcbm health`` checks its age.

The ready loop calls :func:`touch_health` every cycle; a container's HEALTHCHECK runs
``lem-dcbm health``, which exits 0 only while the file is fresh. A module whose loop hangs
or died therefore turns the container unhealthy, whatever the process table says.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

#: Where the heartbeat lives unless ``LEM_DCBM_HEALTH_FILE`` says otherwise.
DEFAULT_HEALTH_FILE = Path("/tmp/lem-dcbm.health")  # noqa: S108 - a marker, no data
#: Environment variable naming the heartbeat file, for the module and the check alike.
HEALTH_FILE_ENV = "LEM_DCBM_HEALTH_FILE"
#: A heartbeat older than this is stale; the loop beats once a second.
DEFAULT_MAX_AGE_S = 10.0

# Paths whose touch failed already: warn once, not once a second.
_failing: set[Path] = set()


def health_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """The heartbeat path from ``LEM_DCBM_HEALTH_FILE``, else the default."""
    env = os.environ if environ is None else environ
    value = env.get(HEALTH_FILE_ENV, "")
    return Path(value) if value else DEFAULT_HEALTH_FILE


def touch_health(path: Path) -> None:
    """Mark the module alive now; never raises, a failure is logged once."""
    try:
        path.touch(exist_ok=True)
    except OSError as exc:
        if path not in _failing:
            _failing.add(path)
            _LOGGER.warning("cannot write heartbeat file %s: %s", path, exc)
        return
    if path in _failing:
        _failing.discard(path)
        _LOGGER.info("heartbeat file %s writable again", path)


def check_health(path: Path, max_age_s: float = DEFAULT_MAX_AGE_S) -> tuple[bool, str]:
    """Whether ``path`` was touched within ``max_age_s`` seconds, and one line saying why."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False, f"unhealthy: no heartbeat file {path} (module not running or not ready)"
    except OSError as exc:
        return False, f"unhealthy: cannot read heartbeat file {path}: {exc.strerror}"
    # A heartbeat from the future means the wall clock was set back; the next beat fixes it.
    age = max(0.0, time.time() - mtime)
    if age > max_age_s:
        return False, f"unhealthy: last heartbeat {age:.1f} s ago (limit {max_age_s:g} s)"
    return True, f"healthy: last heartbeat {age:.1f} s ago"


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``lem-dcbm health``."""
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help=f"heartbeat file (default: ${HEALTH_FILE_ENV} or {DEFAULT_HEALTH_FILE})",
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_AGE_S,
        metavar="SECONDS",
        help=f"oldest heartbeat still counted as healthy (default: {DEFAULT_MAX_AGE_S:g})",
    )
    parser.set_defaults(handler=health_command)


def health_command(args: argparse.Namespace) -> int:
    """Exit 0 when the heartbeat is fresh, 1 otherwise; one line says why."""
    path: Path = args.file if args.file is not None else health_file_path()
    healthy, reason = check_health(path, args.max_age)
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def health_main(argv: list[str] | None = None) -> int:
    """``lem-dcbm health`` on its own: exit 0 when the heartbeat is fresh, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="lem-dcbm health",
        description="Check that a running lem-dcbm module is alive (for container health checks).",
    )
    configure(parser)
    return health_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(health_main())
