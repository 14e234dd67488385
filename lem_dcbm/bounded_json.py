"""JSON from outside (the broker, a runtime config change) parsed with its nesting bounded.

Python's parser recurses once per level of ``[``/``{``: text nested a few thousand levels
deep ends in ``RecursionError`` (or worse on a thread with a small stack), which no
``except ValueError`` catches. Such text is measured first and refused unparsed.
"""

from __future__ import annotations

import json

from lem_dcbm.errors import LemDcbmError
from lem_dcbm.json_types import JsonValue

#: Deepest nesting of arrays and objects parsed; a valid call is nested 5 levels at most.
MAX_JSON_DEPTH = 32


class TooDeep(LemDcbmError, ValueError):
    """JSON text nested deeper than allowed; it was not parsed."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, strings skipped (no parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads_bounded(text: str, max_depth: int = MAX_JSON_DEPTH) -> JsonValue:
    """``json.loads``, refusing text nested deeper than ``max_depth`` with ``TooDeep``.

    Raises ``ValueError`` (``TooDeep`` included) for anything that is not JSON.
    """
    depth = nesting_depth(text)
    if depth > max_depth:
        raise TooDeep(f"nested {depth} levels deep, more than the {max_depth} allowed")
    value: JsonValue = json.loads(text)
    return value
