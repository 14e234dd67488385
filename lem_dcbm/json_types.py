"""JSON as the package reads and writes it: a recursive type instead of ``Any``.

A value decoded by ``json.loads`` is a ``JsonValue``; code that reads one narrows it
(``isinstance``) before use. Arrays and objects are read-only views (``Sequence``,
``Mapping``), so a ``list[dict[str, str]]`` is a ``JsonValue`` as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

#: A JSON leaf.
JsonScalar: TypeAlias = str | int | float | bool | None
#: Any JSON value, as ``json.loads`` returns it or as the package builds one to encode.
JsonValue: TypeAlias = JsonScalar | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
#: A JSON object the package builds (and may still change).
JsonObject: TypeAlias = dict[str, JsonValue]
#: A JSON object as a reader takes it.
JsonMapping: TypeAlias = Mapping[str, JsonValue]
