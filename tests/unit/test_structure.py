"""Facts of the package's structure that a review would otherwise count by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lem_dcbm

PACKAGE = Path(lem_dcbm.__file__).parent
#: Functions whose parameters or return carry ``Any``: at most this many less one.
MAX_ANY_SIGNATURES = 60
_ANY = re.compile(r"\bAny\b")


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in PACKAGE.rglob("*.py")]


def _alias_value(node: ast.stmt) -> tuple[str, ast.expr] | None:
    """``(name, value)`` of a module-level type alias (``X = ...`` or ``X: TypeAlias = ...``)."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        if isinstance(target, ast.Name):
            return target.id, node.value
    if (
        isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.value is not None
        and "TypeAlias" in ast.unparse(node.annotation)
    ):
        return node.target.id, node.value
    return None


def any_aliases() -> dict[str, str]:
    """Module-level names whose value mentions ``Any``: ``{name: where}``."""
    found: dict[str, str] = {}
    for path, tree in _modules():
        for node in tree.body:
            alias = _alias_value(node)
            if alias is not None and _ANY.search(ast.unparse(alias[1])):
                found[alias[0]] = f"{path.relative_to(PACKAGE)}:{node.lineno}"
    return found


def any_signatures() -> list[str]:
    """Every function with ``Any`` (or an alias that hides it) in a parameter or its return."""
    hidden = set(any_aliases())
    found: list[str] = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            annotations = [p.annotation for p in params if p is not None and p.annotation]
            if node.returns is not None:
                annotations.append(node.returns)
            names = {
                name.id
                for annotation in annotations
                for name in ast.walk(annotation)
                if isinstance(name, ast.Name)
            }
            texts = " ".join(ast.unparse(annotation) for annotation in annotations)
            if _ANY.search(texts) or names & hidden:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    return found


def test_few_signatures_carry_any() -> None:
    found = any_signatures()
    assert len(found) < MAX_ANY_SIGNATURES, "\n".join(found)


def test_no_module_names_any_under_another_name() -> None:
    bare = {
        name: where
        for name, where in any_aliases().items()
        if _ANY.fullmatch(_alias_source(where, name))
    }
    assert bare == {}, "a type alias of Any hides it from the count"


def _alias_source(where: str, name: str) -> str:
    path, _, line = where.rpartition(":")
    tree = ast.parse((PACKAGE / path).read_text(encoding="utf-8"))
    for node in tree.body:
        alias = _alias_value(node)
        if alias is not None and alias[0] == name and node.lineno == int(line):
            return ast.unparse(alias[1]).strip("'\"")
    return ""
