"""The package imports only the Python standard library and its declared dependencies."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.support.constraints import pinned_version, pins

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")


def _module_py_dependencies() -> dict[str, str]:
    """``module.py``'s import name -> distribution map (it names them when one is missing)."""
    spec = importlib.util.spec_from_file_location("module_py", ROOT / "module.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: dist.lower() for name, dist in module.DEPENDENCIES.items()}


#: Import name -> distribution, for the declared runtime dependencies.
IMPORT_NAMES = _module_py_dependencies()


def declared() -> dict[str, str]:
    """``distribution: requirement`` of pyproject.toml's runtime dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        re.split(r"[<>=!~; \[]", spec, maxsplit=1)[0].lower(): spec
        for spec in project["dependencies"]
    }


def imported_top_level(paths: list[Path]) -> dict[str, str]:
    """Top-level names each file imports (any depth, also inside functions): name -> file."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_import_is_stdlib_the_package_or_a_declared_dependency() -> None:
    files = [*sorted((ROOT / "lem_dcbm").rglob("*.py")), ROOT / "module.py"]
    imports = imported_top_level(files)
    allowed = set(sys.stdlib_module_names) | {"lem_dcbm", "__future__"} | set(IMPORT_NAMES)

    assert {name: where for name, where in imports.items() if name not in allowed} == {}
    assert set(IMPORT_NAMES) <= set(imports), "a declared dependency nothing imports"


def test_module_py_names_exactly_the_declared_distributions() -> None:
    assert set(IMPORT_NAMES.values()) == set(declared())


def test_every_dependency_has_a_lower_bound_and_an_upper_bound_at_the_next_major() -> None:
    for name, spec in declared().items():
        lower = re.search(r">=\s*([\d.]+)", spec)
        upper = re.search(r"<\s*(\d+)(?:,|$)", spec)
        assert lower, f"{name}: {spec}"
        assert upper, f"{name}: {spec}"
        assert int(upper.group(1)) > int(lower.group(1).split(".")[0]), spec


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_constraints_pin_each_dependency_inside_its_range(python: str) -> None:
    from packaging.requirements import Requirement

    pinned = {name: pinned_version(pin) for name, pin in pins(python).items()}
    for name, spec in declared().items():
        assert Requirement(spec).specifier.contains(pinned[name]), (spec, pinned.get(name))


def test_every_install_command_in_the_docs_takes_the_constraints() -> None:
    unpinned = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        # Shell lines continued with a backslash are one command.
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            for command in re.findall(r"pip install[^`#\n]*", line):
                if "--constraint" not in command and " -c " not in command:
                    unpinned.append(f"{path.name}: {command.strip()}")

    assert unpinned == []
