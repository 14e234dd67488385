"""The Pythons the project claims: one list, from requires-python on, run by CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.smoke.test_python_versions import supported_pythons

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")


def test_classifiers_name_every_minor_version_from_requires_python_on() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    oldest = re.fullmatch(r">=(3\.\d+)", project["requires-python"])
    assert oldest, project["requires-python"]
    versions = supported_pythons()
    assert versions[0] == oldest.group(1)
    minors = [int(v.split(".")[1]) for v in versions]
    assert minors == list(range(minors[0], minors[0] + len(minors)))


def test_docs_and_ruff_name_the_oldest_supported_python() -> None:
    oldest = supported_pythons()[0]
    install = (ROOT / "docs" / "install.md").read_text()
    assert f"Python {oldest} or newer" in install
    assert f"so {oldest} it is" in install
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["target-version"] == "py" + oldest.replace(".", "")
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["python_version"] == oldest


def test_ci_runs_the_install_smoke_test_of_every_python_after_the_suite() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("CI=true ./scripts/test") < ci.index("./scripts/python-smoke ||")
    # The suite itself on the newest supported Python, tried first.
    newest = supported_pythons()[-1]
    assert f"for python in python{newest} " in ci
    assert ci.index(f"python{newest}") < ci.index("CI=true ./scripts/test")
    smoke = (ROOT / "scripts" / "python-smoke").read_text()
    assert "tests/smoke -m smoke" in smoke


def test_pytest_shows_why_each_test_was_skipped_and_leaves_the_smoke_tests_out() -> None:
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "addopts"
    ]
    assert "-rs" in addopts.split()
    assert '-m "not smoke"' in addopts


def test_container_test_says_how_the_rss_wait_goes() -> None:
    # The 60 s until the RSS sample were silent: a line every 10 s now.
    script = (ROOT / "scripts" / "container-test").read_text()
    wait = script[script.index("sampling the module's RSS") :]
    wait = wait[: wait.index("done")]
    assert "step=$((rest < 10 ? rest : 10))" in wait
    assert 'say "  RSS $rss MB at' in wait
