"""The pins of constraints.txt that apply to one Python (a pin may carry a version marker)."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def constraint_lines(path: Path = CONSTRAINTS) -> list[Requirement]:
    """Every requirement line of the file, markers included."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(text) for text in lines if text]


def pins(python: str | None = None, path: Path = CONSTRAINTS) -> dict[str, Requirement]:
    """Canonical name -> the pin that applies to ``python`` ("3.10"; default: this one)."""
    version = python or ".".join(platform.python_version_tuple()[:2])
    environment = {"python_version": version, "python_full_version": f"{version}.0"}
    found: dict[str, Requirement] = {}
    for requirement in constraint_lines(path):
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name not in found, f"{path.name}: two pins of {name} apply to Python {version}"
        found[name] = requirement
    return found


def pinned_version(requirement: Requirement) -> str:
    """The version of an ``==`` pin."""
    return next(iter(requirement.specifier)).version


def runtime_closure(name: str, python: str) -> dict[str, list[Requirement]]:
    """Every distribution ``name`` needs at run time on ``python``, with the requirements.

    Read from the installed distributions' metadata, markers evaluated for ``python``.
    """
    environment = {"extra": "", "python_version": python, "python_full_version": f"{python}.0"}
    needed: dict[str, list[Requirement]] = {}
    todo = [name]
    while todo:
        for text in metadata.requires(todo.pop()) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker and not marker.evaluate(environment):
                continue
            key = canonicalize_name(requirement.name)
            if key not in needed:
                todo.append(requirement.name)
            needed.setdefault(key, []).append(requirement)
    return needed
