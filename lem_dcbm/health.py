"""Liveness heartbeat per module id: the module touches a file, ``lem-dcbm health`` checks it.

Each module id has its own file, ``<dir>/<module id>.heartbeat``, so one module's beat
never vouches for another. The ready loop touches it after every cycle whose reading the
meter answered; ``lem-dcbm health`` exits 0 only while it is fresh. "Meter unreachable"
therefore means one thing, at start-up as later: no reading answered for longer than
``--max-age`` seconds. At start the module replaces any beat of an earlier run by one
dated 1970 ("running, no answer yet"), and it removes its file when it stops.

The module often runs as root and the default directory is under ``/tmp``: it writes
only into a directory it created (0700) or one owned by itself or root that others
cannot write to, and never through a symbolic link; the check never reads a beat
through one either.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from lem_dcbm.errors import LemDcbmError

_LOGGER = logging.getLogger(__name__)

#: Environment variable naming the heartbeat directory, for the module and the check alike.
HEALTH_DIR_ENV = "LEM_DCBM_HEALTH_DIR"
#: Where the shipped setups put the heartbeats (LEM_DCBM_HEALTH_DIR of the systemd unit and
#: of the container image): ``lem-dcbm health`` looks there too when the variable is unset
#: in its own environment, as in a shell beside the service.
WELL_KNOWN_HEALTH_DIRS = (Path("/run/lem-dcbm"), Path("/var/lib/lem-dcbm/health"))
#: The file name of a module's heartbeat is its module id plus this.
HEARTBEAT_SUFFIX = ".heartbeat"
#: A heartbeat older than this is stale; the loop beats once a second.
DEFAULT_MAX_AGE_S = 10.0

# Paths whose touch failed already: warn once, not once a second.
_failing: set[Path] = set()


def default_health_dir(environ: Mapping[str, str] | None = None) -> Path:
    """This user's own heartbeat directory: in ``$XDG_RUNTIME_DIR``, else the temp folder.

    Per user, not one shared ``/tmp`` folder: another user's modules (or their leftovers)
    must not count in this user's check, nor be able to plant files in its folder.
    """
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime:
        return Path(runtime) / "lem-dcbm-health"
    return Path(env.get("TMPDIR") or "/tmp") / f"lem-dcbm-health-{os.getuid()}"  # noqa: S108


#: The default heartbeat directory of this process's user and environment.
DEFAULT_HEALTH_DIR = default_health_dir()


def health_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The heartbeat directory from ``LEM_DCBM_HEALTH_DIR``, else this user's default."""
    env = os.environ if environ is None else environ
    value = env.get(HEALTH_DIR_ENV, "")
    return Path(value) if value else default_health_dir(env)


def heartbeat_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where ``lem-dcbm health`` looks: the variable's folder alone when it is set, else
    this user's default and the shipped setups' folders that hold a heartbeat."""
    env = os.environ if environ is None else environ
    if env.get(HEALTH_DIR_ENV, ""):
        return [health_dir(env)]
    places = [default_health_dir(env), *WELL_KNOWN_HEALTH_DIRS]
    found = [place for place in places if _holds_heartbeats(place)]
    return found or places


def _holds_heartbeats(directory: Path) -> bool:
    try:
        return any(directory.glob(f"*{HEARTBEAT_SUFFIX}"))
    except OSError:
        return False


def health_file_path(module_id: str, environ: Mapping[str, str] | None = None) -> Path:
    """The heartbeat file of ``module_id`` (characters unsafe in a file name become ``_``)."""
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in module_id) or "module"
    return health_dir(environ) / f"{safe_id}{HEARTBEAT_SUFFIX}"


class UnsafeHeartbeat(LemDcbmError, OSError):
    """The heartbeat's directory or file is not one the module may write through."""


def _private_directory(directory: Path) -> None:
    """Create ``directory`` (0700) if missing; raise unless it is safe to write in.

    Safe: a real directory (no symbolic link), owned by this user or root, and not
    writable by others, so no other user can plant a link or a fake beat in it.
    """
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700, parents=True)
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeHeartbeat(f"the heartbeat directory {directory} is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeHeartbeat(f"{directory} is not a directory")
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafeHeartbeat(
            f"the heartbeat directory {directory} belongs to user {info.st_uid}, not to this one"
        )
    if info.st_mode & stat.S_IWOTH:
        raise UnsafeHeartbeat(f"the heartbeat directory {directory} is writable by every user")


def _open_beat(path: Path) -> tuple[int, os.stat_result]:
    """The heartbeat file opened for its times, never through a link, and its ``fstat``.

    ``O_NOFOLLOW`` refuses a symbolic link at ``path`` (ELOOP); ``O_NONBLOCK`` keeps a
    FIFO planted there from blocking the open.
    """
    _private_directory(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeHeartbeat(f"{path} is a symbolic link; not followed") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeHeartbeat(f"{path} is not a regular file")
    return fd, info


def touch_health(path: Path) -> None:
    """Mark the module alive now; never raises, a failure is logged once."""
    _write_beat(path, None)


class Heartbeat:
    """A running module's heartbeat: ``touch_health`` once a second, at two calls' cost.

    The first beat (and any beat after something changed) takes ``touch_health``'s road:
    directory checks, a no-follow open, a type check; seven calls into the kernel. It
    then keeps that descriptor, and a beat sets its times and checks by ``lstat`` that
    the path still names the same file: a file removed, replaced or turned into a link
    falls back to the full road, with its refusals and its log line. The descriptor is
    only ever of a regular file that was opened without following a link.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._identity: tuple[int, int] = (0, 0)

    def touch(self) -> None:
        """Mark the module alive now; never raises, a failure is logged once."""
        if self._fd is not None:
            try:
                os.utime(self._fd)
                info = os.lstat(self.path)
                if (info.st_dev, info.st_ino) == self._identity:
                    return
            except OSError:
                pass
            self.close()
        kept = _write_beat(self.path, None, keep=True)
        if kept is not None:
            self._fd, info = kept
            self._identity = (info.st_dev, info.st_ino)

    def close(self) -> None:
        """Release the kept descriptor (the file stays)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _write_beat(
    path: Path, times: tuple[int, int] | None, *, keep: bool = False
) -> tuple[int, os.stat_result] | None:
    """Set the beat's times (now, or ``times``); never raises, a failure is logged once.

    With ``keep`` the open descriptor and its ``fstat`` are handed back (None on failure).
    """
    try:
        fd, info = _open_beat(path)
        try:
            os.utime(fd, times)
        except OSError:
            os.close(fd)
            raise
    except OSError as exc:
        if path not in _failing:
            _failing.add(path)
            _LOGGER.warning("cannot write heartbeat file %s: %s", path, exc)
        return None
    if path in _failing:
        _failing.discard(path)
        _LOGGER.info("heartbeat file %s writable again", path)
    if keep:
        return fd, info
    os.close(fd)
    return None


def register_health(path: Path) -> None:
    """Announce a module whose meter has not answered yet: a heartbeat dated 1970.

    ``lem-dcbm health`` without ``--module-id`` then counts this module as unhealthy
    until its first answered reading, instead of not seeing it at all. A symbolic link
    (or another non-file) left at the path is removed first, the link itself, never
    what it points to; while running such a thing only stops the beats.
    """
    try:
        info = os.lstat(path)
    except OSError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            _LOGGER.warning("removed %s at the heartbeat path %s", _kind(info.st_mode), path)
            remove_health(path)
    _write_beat(path, (0, 0))


def _kind(mode: int) -> str:
    return "a symbolic link" if stat.S_ISLNK(mode) else "a special file"


def remove_health(path: Path) -> None:
    """Remove a heartbeat (at start and at a clean stop); never raises."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        _LOGGER.warning("cannot remove heartbeat file %s: %s", path, exc)


def check_health(path: Path, max_age_s: float = DEFAULT_MAX_AGE_S) -> tuple[bool, str]:
    """Whether ``path`` was touched within ``max_age_s`` seconds, and one line saying why."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False, (
            f"unhealthy: no heartbeat file {path} "
            "(module not running, or its meter has not answered yet)"
        )
    except OSError as exc:
        return False, f"unhealthy: cannot read heartbeat file {path}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return False, f"unhealthy: heartbeat file {path} is a symbolic link (not followed)"
    if not stat.S_ISREG(info.st_mode):
        return False, f"unhealthy: heartbeat file {path} is not a regular file"
    mtime = info.st_mtime
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
        help=f"heartbeat directory (default: ${HEALTH_DIR_ENV}; else this user's "
        f"{DEFAULT_HEALTH_DIR} and the service's and the image's "
        f"{', '.join(map(str, WELL_KNOWN_HEALTH_DIRS))}, those holding heartbeats)",
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
    directories = [args.dir] if args.dir is not None else heartbeat_dirs()
    if args.file is not None:
        healthy, reason = check_health(args.file, args.max_age)
    elif args.module_id is not None:
        beats = [
            health_file_path(args.module_id, {HEALTH_DIR_ENV: str(directory)})
            for directory in directories
        ]
        beat = next((b for b in beats if b.exists()), beats[0])
        healthy, reason = check_health(beat, args.max_age)
        reason = f"{args.module_id}: {reason}"
    elif len(directories) == 1:
        healthy, reason = check_all(directories[0], args.max_age)
    elif not any(map(_holds_heartbeats, directories)):
        healthy = False
        reason = (
            f"unhealthy: no heartbeat in {', '.join(map(str, directories))} (no module "
            f"running, or no meter has answered yet; a module given another "
            f"{HEALTH_DIR_ENV}: name it with --dir)"
        )
    else:
        results = [check_all(directory, args.max_age) for directory in directories]
        healthy = all(ok for ok, _ in results)
        reason = "; ".join(
            f"{directory}: {why}" for directory, (_, why) in zip(directories, results, strict=True)
        )
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
