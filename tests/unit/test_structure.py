"""Facts of the package's structure that a review would otherwise count by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lem_dcbm

PACKAGE = Path(lem_dcbm.__file__).parent
#: Signatures with ``Any`` in a parameter or the return must stay below this.
MAX_ANY_SIGNATURES = 60
_ANY = re.compile(r"\bAny\b")


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def _aliases() -> dict[str, tuple[str, str]]:
    """Module-level assignments of a name: ``{name: (where, value as source)}``.

    ``X = ...`` and ``X: TypeAlias = ...``; what is not a type costs nothing here, since
    only names that mention ``Any`` are looked at.
    """
    found: dict[str, tuple[str, str]] = {}
    for where, tree in _modules():
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif (
                isinstance(node, ast.AnnAssign)
                and node.value is not None
                and "TypeAlias" in ast.unparse(node.annotation)
            ):
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name):
                found[target.id] = (f"{where}:{node.lineno}", ast.unparse(value).strip("'\""))
    return found


def _hiding_any() -> set[str]:
    """Alias names whose value mentions ``Any`` (a signature using one carries it too)."""
    return {name for name, (_, value) in _aliases().items() if _ANY.search(value)}


def any_signatures() -> list[str]:
    """Every function with ``Any``, or an alias that holds it, in a parameter or its return."""
    hidden = _hiding_any()
    found: list[str] = []
    for where, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            annotations = [p.annotation for p in params if p is not None and p.annotation]
            if node.returns is not None:
                annotations.append(node.returns)
            text = " ".join(ast.unparse(annotation) for annotation in annotations)
            names = set(re.findall(r"\w+", text))
            if "Any" in names or names & hidden:
                found.append(f"{where}:{node.lineno} {node.name}")
    return found


def test_few_signatures_carry_any() -> None:
    found = any_signatures()
    assert len(found) < MAX_ANY_SIGNATURES, "\n".join(found)


def test_no_alias_stands_for_any() -> None:
    """``X = Any`` would hide ``Any`` from the count above: type JSON as ``json_types`` does."""
    bare = {where for where, value in _aliases().values() if value in ("Any", "typing.Any")}
    assert bare == set()


def test_the_service_never_asks_which_adapter_it_holds() -> None:
    """Mode differences are members of ``PowermeterAdapter``, not ``isinstance`` branches."""
    tree = ast.parse((PACKAGE / "service.py").read_text(encoding="utf-8"))
    asked = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "isinstance"
        and "Adapter" in ast.unparse(node.args[1])
    ]
    assert asked == []


def test_the_core_builds_no_everest_type() -> None:
    """The core speaks its own types; EVerest's names appear only in the adapters."""
    everest_keys = ("energy_Wh_import", "identification_data", "transaction_min_stop_time")
    for path in sorted((PACKAGE / "core").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not [key for key in everest_keys if f'"{key}"' in text], path.name
