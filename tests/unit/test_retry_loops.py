"""One retry loop in the package: ``RetryPolicy.run`` (lem_dcbm/retry.py).

The rule, read from the source (``ast``), not from names or comments:

    A *sleep-and-retry loop* is a ``for`` or ``while`` loop whose own body (nested
    function, lambda and class definitions left out, nested loops counted in) both
    (1) pauses: calls a function or method whose name ends in ``sleep`` or ``wait``
        (``time.sleep``, ``self._sleep``, ``clock.wait``, ``event.wait``, ...), and
    (2) catches: holds a ``try`` statement with at least one ``except`` clause.

Such a loop catches a failure and pauses before it goes around again: that is what
``RetryPolicy.run`` does, with its attempts, pauses, deadline, interruption and one log
line per sequence. Every other place hands it the attempt as a function.

A loop that pauses without catching (the 1 Hz beat, a poll of a condition until a
deadline) is no retry loop; neither is one that catches without pausing. The loops in
``ALLOWED`` fit the rule's shape and are not retries: each is named, with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lem_dcbm

PACKAGE = Path(lem_dcbm.__file__).parent
#: The one place allowed to hold sleep-and-retry loops.
RETRY_MODULE = "retry.py"
#: Loops of that shape that are not retries: ``path:Qualified.function`` -> why.
ALLOWED = {
    "core/ready_loop.py:ReadyLoop.run_housekeeping": (
        "a periodic scheduler: background work at its own pace, a failure is logged and the "
        "next round is the next planned one, not a retry of the failed step"
    ),
    "everest_api/adapter.py:ApiAdapter._beat": (
        "the periodic communication check: one beat per interval whatever the last one did"
    ),
    "harness/processes.py:stop_processes": (
        "waits once for each of several processes and kills the one that does not end: "
        "nothing is tried again"
    ),
}
PAUSES = ("sleep", "wait")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_TRIES = tuple(getattr(ast, name) for name in ("Try", "TryStar") if hasattr(ast, name))


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def _own_nodes(loop: ast.For | ast.AsyncFor | ast.While) -> list[ast.AST]:
    """Every node of the loop's body and ``else``, without nested definitions."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [*loop.body, *loop.orelse]
    while stack:
        node = stack.pop()
        if isinstance(node, _DEFINITIONS):
            continue
        found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def is_retry_loop(loop: ast.For | ast.AsyncFor | ast.While) -> bool:
    """The rule of this module's docstring."""
    nodes = _own_nodes(loop)
    pauses = any(isinstance(n, ast.Call) and _callee(n).endswith(PAUSES) for n in nodes)
    catches = any(isinstance(n, _TRIES) and getattr(n, "handlers", None) for n in nodes)
    return pauses and catches


def retry_loops(source: str) -> list[tuple[str, int]]:
    """``(Qualified.function, line)`` of each sleep-and-retry loop in ``source``."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, names: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = names
            if isinstance(child, _DEFINITIONS) and not isinstance(child, ast.Lambda):
                inner = (*names, child.name)
            if isinstance(child, ast.For | ast.AsyncFor | ast.While) and is_retry_loop(child):
                found.append((".".join(names) or "<module>", child.lineno))
            visit(child, inner)

    visit(ast.parse(source), ())
    return found


def test_the_rule_tells_a_retry_loop_from_a_beat_and_a_poll() -> None:
    source = """
def retry(fn, sleep):
    while True:
        try:
            return fn()
        except OSError:
            sleep(1)

def beat(stop, publish):
    while not stop.wait(1.0):
        publish()

def poll(ready, clock):
    while not ready():
        clock.sleep(0.1)

def nested_definition_is_not_the_loop(items, sleep):
    for item in items:
        def attempt():
            try:
                return item()
            except OSError:
                sleep(1)
"""
    assert retry_loops(source) == [("retry", 3)]


def test_no_sleep_and_retry_loop_outside_retry_policy() -> None:
    found: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where == RETRY_MODULE:
            continue
        for name, line in retry_loops(path.read_text(encoding="utf-8")):
            found[f"{where}:{name}"] = line
    unexpected = {key: line for key, line in found.items() if key not in ALLOWED}
    assert not unexpected, (
        "sleep-and-retry loops outside lem_dcbm/retry.py (hand the attempt to "
        f"RetryPolicy.run, or allow a periodic scheduler by name with a reason): {unexpected}"
    )
    # An allowance outlives its loop only by mistake: it would let a new one in unseen.
    assert set(ALLOWED) <= set(found), set(ALLOWED) - set(found)


def test_retry_policy_holds_the_loop_the_rule_names() -> None:
    source = (PACKAGE / RETRY_MODULE).read_text(encoding="utf-8")
    assert [name for name, _ in retry_loops(source)] == ["RetryPolicy.run"]
