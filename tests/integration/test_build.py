"""The wheel builds, without a deprecation warning, at both ends of the setuptools range.

A deprecation warning in the build is a date on which the same sources stop building
(setuptools announced one for `project.license` as a table); the bounded range in
pyproject.toml keeps a later major from breaking an old checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")


def setuptools_range() -> tuple[str, str]:
    """The lower bound and the excluded upper bound of the build requirement."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    (setuptools,) = [r for r in requires if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=([\d.]+),<([\d.]+)", setuptools)
    assert match, f"setuptools needs a lower and an upper bound: {setuptools}"
    return match.group(1), match.group(2)


def source_copy(into: Path) -> Path:
    """The checkout without its build state, as scripts/wheelhouse builds it.

    Two builds in the checkout itself share its build/ folder: run at once (the two ends
    below, on two workers) one deletes what the other is copying.
    """
    junk = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
    )
    return Path(shutil.copytree(ROOT, into / "src", ignore=junk))


def test_build_requirements_are_bounded_and_need_nothing_else() -> None:
    lower, upper = setuptools_range()
    # 77: the first to read an SPDX license expression with license-files (PEP 639).
    assert tuple(map(int, lower.split("."))) >= (77,)
    assert int(upper.split(".")[0]) > int(lower.split(".")[0])


@pytest.mark.parametrize("end", ["lowest", "newest"])
def test_wheel_builds_without_a_deprecation_warning(tmp_path: Path, end: str) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if end == "lowest":
        pin = tmp_path / "setuptools.txt"
        pin.write_text(f"setuptools=={setuptools_range()[0]}\n")
        env["PIP_CONSTRAINT"] = str(pin)
    # -v shows the build backend's own output, where setuptools prints its warnings.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-v", "--no-deps"),
            *("--wheel-dir", tmp_path, source_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    installed = re.findall(r"Successfully installed .*?(setuptools-[\d.]+)", output)
    assert installed, output[-3000:]
    warnings = [line for line in output.splitlines() if re.search(r"deprecat", line, re.I)]
    assert warnings == [], installed

    (wheel,) = tmp_path.glob("lem_dcbm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
