"""Crash-safe file replacement: a reader sees the old content or the new, never a mix.

The new content goes to a temporary file in the same directory, is flushed and fsynced,
renamed over the target with ``os.replace`` (atomic on POSIX) and the directory is fsynced
so the rename itself survives a power cut. A crash before the rename leaves a temporary
file behind; :func:`remove_temporaries` clears those on the next start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

#: Every temporary file starts with this; no final file may.
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``; durable on disk when this returns."""
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temporary(path: Path) -> bool:
    """True for a temporary file that :func:`write_atomic` left behind."""
    return path.name.startswith(TEMP_PREFIX)


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files a crash left in ``directory``; return what was removed."""
    removed = []
    for path in directory.iterdir():
        if is_temporary(path) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed
