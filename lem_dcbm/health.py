"""Liveness heartbeat per module id: the module touches a file, ``lem-dcbm health`` checks it.

Each module id has its own file, ``<dir>/<module id>.heartbeat``, so one module's beat
never vouches for another. The ready loop touches it after every cycle whose reading the
meter answered; ``lem-dcbm health`` exits 0 only while it is fresh. "Meter unreachable"
therefore means one thing, at start-up as later: no reading answered for longer than
``--max-age`` seconds. At start the module replaces any beat of an earlier run by one
dated 1970 ("running, no answer yet"), and it removes its file when it stops.
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

#: Where the heartbeats live unless ``LEM_DCBM_HEALTH_DIR`` says otherwise.
DEFAULT_HEALTH_DIR = Path("/tmp/lem-dcbm-health")  # noqa: S108 - markers, no data
#: Environment variable naming the heartbeat directory, for the module and the check alike.
HEALTH_DIR_ENV = "LEM_DCBM_HEALTH_DIR"
#: The file name of a module's heartbeat is its module id plus this.
HEARTBEAT_SUFFIX = ".heartbeat"
#: A heartbeat older than this is stale; the loop beats once a second.
DEFAULT_MAX_AGE_S = 10.0

# Paths whose touch failed already: warn once, not once a second.
_failing: set[Path] = set()


def health_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The heartbeat directory from ``LEM_DCBM_HEALTH_DIR``, else the default."""
    env = os.environ if environ is None else environ
    value = env.get(HEALTH_DIR_ENV, "")
    return Path(value) if value else DEFAULT_HEALTH_DIR


def health_file_path(module_id: str, environ: Mapping[str, str] | None = None) -> Path:
    """The heartbeat file of ``module_id`` (characters unsafe in a file name become ``_``)."""
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in module_id) or "module"
    return health_dir(environ) / f"{safe_id}{HEARTBEAT_SUFFIX}"


def touch_health(path: Path) -> None:
    """Mark the module alive now; never raises, a failure is logged once."""
    try:
        try:
            # Once a second: one system call while the file exists.
            os.utime(path)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
    except OSError as exc:
        if path not in _failing:
            _failing.add(path)
            _LOGGER.warning("cannot write heartbeat file %s: %s", path, exc)
        return
    if path in _failing:
        _failing.discard(path)
        _LOGGER.info("heartbeat file %s writable again", path)


def register_health(path: Path) -> None:
    """Announce a module whose meter has not answered yet: a heartbeat dated 1970.

    ``lem-dcbm health`` without ``--module-id`` then counts this module as unhealthy
    until its first answered reading, instead of not seeing it at all.
    """
    touch_health(path)
    try:
        os.utime(path, (0, 0))
    except OSError as exc:
        _LOGGER.warning("cannot write heartbeat file %s: %s", path, exc)


def remove_health(path: Path) -> None:
    """Remove a heartbeat (at start and at a clean stop); never raises."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        _LOGGER.warning("cannot remove heartbeat file %s: %s", path, exc)


def check_health(path: Path, max_age_s: float = DEFAULT_MAX_AGE_S) -> tuple[bool, str]:
    """Whether ``path`` was touched within ``max_age_s`` seconds, and one line saying why."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False, (
            f"unhealthy: no heartbeat file {path} "
            "(module not running, or its meter has not answered yet)"
        )
    except OSError as exc:
        return False, f"unhealthy: cannot read heartbeat file {path}: {exc.strerror}"
    if mtime == 0:
        return False, "unhealthy: running, but its meter has not answered yet"
    # A heartbeat from the future means the wall clock was set back; the next beat fixes it.
    age = max(0.0, time.time() - mtime)
    if age > max_age_s:
        return False, (
            f"unhealthy: last heartbeat {age:.1f} s ago (limit {max_age_s:g} s): "
            "the module hangs or its meter does not answer"
        )
    return True, f"healthy: last heartbeat {age:.1f} s ago"


def check_all(directory: Path, max_age_s: float = DEFAULT_MAX_AGE_S) -> tuple[bool, str]:
    """Every module's heartbeat in ``directory`` must be fresh; one line names each module."""
    try:
        beats = sorted(directory.glob(f"*{HEARTBEAT_SUFFIX}"))
    except OSError as exc:
        return False, f"unhealthy: cannot read heartbeat directory {directory}: {exc}"
    if not beats:
        return False, (
            f"unhealthy: no heartbeat in {directory} "
            "(no module running, or no meter has answered yet)"
        )
    results = [
        (beat.name[: -len(HEARTBEAT_SUFFIX)], *check_health(beat, max_age_s)) for beat in beats
    ]
    bad = [f"{module_id}: {reason}" for module_id, healthy, reason in results if not healthy]
    if bad:
        return False, "; ".join(bad)
    return True, "; ".join(f"{module_id}: {reason}" for module_id, _, reason in results)


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``lem-dcbm health``."""
    parser.add_argument(
        "--module-id",
        default=None,
        help="check this module's heartbeat only (default: every module's heartbeat in "
        "the directory must be fresh)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"heartbeat directory (default: ${HEALTH_DIR_ENV}, else {DEFAULT_HEALTH_DIR})",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help="check this heartbeat file, instead of --module-id and --dir (default: none)",
    )
    parser.add_argument(
        "--max-age",
        type=positive_seconds,
        default=DEFAULT_MAX_AGE_S,
        metavar="SECONDS",
        help="oldest heartbeat still counted as healthy, more than 0 "
        f"(default: {DEFAULT_MAX_AGE_S:g})",
    )
    parser.set_defaults(handler=health_command)


def health_command(args: argparse.Namespace) -> int:
    """Exit 0 when the heartbeat(s) are fresh, 1 otherwise; one line says why."""
    directory: Path = args.dir if args.dir is not None else health_dir()
    if args.file is not None:
        healthy, reason = check_health(args.file, args.max_age)
    elif args.module_id is not None:
        env = {HEALTH_DIR_ENV: str(directory)}
        healthy, reason = check_health(health_file_path(args.module_id, env), args.max_age)
        reason = f"{args.module_id}: {reason}"
    else:
        healthy, reason = check_all(directory, args.max_age)
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
