"""The package's parts import each other one way only: no cycle between them."""

from __future__ import annotations

import ast
from pathlib import Path

import lem_dcbm

PACKAGE = Path(lem_dcbm.__file__).parent


def part_of(module: str) -> str | None:
    """``lem_dcbm.core.controller`` -> ``core``; None outside the package."""
    pieces = module.split(".")
    if pieces[0] != "lem_dcbm" or len(pieces) < 2:
        return None
    return pieces[1]


def imports_by_part() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        part = relative.parts[0]
        if part in ("__init__", "__main__"):
            continue
        targets = graph.setdefault(part, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                target = part_of(name)
                if target is not None and target != part:
                    targets.add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of parts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "active"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "active":
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_between_the_packages_parts() -> None:
    graph = imports_by_part()
    assert {"core", "meter", "everest", "config", "journal"} <= graph.keys()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_knows_no_mqtt_and_the_meter_client_no_everest() -> None:
    graph = imports_by_part()
    assert "everest" not in graph["core"]
    # The journal is injected through the Journal protocol of core.ports.
    assert "journal" not in graph["core"]
    assert not {"everest", "core", "service"} & graph["meter"]
