"""curl as a second, independent client of the simulated meter.

A body goes in through stdin (``-T -``), so curl sends it with
``Transfer-Encoding: chunked`` and ``Expect: 100-continue``, as libcurl does for
EVerest's C++ driver.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
#: The status reported when curl got no HTTP answer at all.
NO_ANSWER = 0


@dataclass(frozen=True)
class CurlResult:
    """What curl saw: the status (``NO_ANSWER`` for none), the body and its ``-v`` log."""

    status: int
    body: str
    log: str


def run_curl(
    host: str,
    port: int,
    method: str,
    path: str,
    body: str | None = None,
    *,
    https: bool = False,
    pin: Path | None = None,
    extra: Sequence[str] = (),
) -> CurlResult:
    """One request; over HTTPS the server's public key must match the PEM at ``pin``."""
    if CURL is None:
        raise RuntimeError("curl is not installed")
    command = [CURL, "-sS", "-v", "--max-time", "10", "-w", "\n%{http_code}"]
    # -X HEAD would make curl wait for a body that never comes.
    command += ["-I"] if method == "HEAD" else ["-X", method]
    if https:
        if pin is None:
            raise ValueError("HTTPS needs the meter's public key to pin")
        # The meter's certificate does not name its address: pin the key, not the name.
        command += ["-k", "--pinnedpubkey", str(pin), "--ciphers", "DEFAULT:@SECLEVEL=1"]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-T", "-"]
    scheme = "https" if https else "http"
    command += [*extra, f"{scheme}://{host}:{port}{path}"]
    done = subprocess.run(command, input=body or "", capture_output=True, text=True, timeout=20)
    text, _, code = done.stdout.rpartition("\n")
    return CurlResult(int(code or NO_ANSWER), text, done.stderr)
