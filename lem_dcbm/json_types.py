"""JSON as the package reads and writes it: a recursive type instead of ``Any``.

A value decoded by ``json.loads`` is a ``JsonValue``; code that reads one narrows it
(``isinstance``) before use. ``JsonObject`` is what a JSON object decodes to and what the
package builds to be encoded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

#: A JSON leaf.
JsonScalar: TypeAlias = str | int | float | bool | None
#: Any JSON value, as ``json.loads`` returns it.
JsonValue: TypeAlias = JsonScalar | list["JsonValue"] | dict[str, "JsonValue"]
#: A JSON object.
JsonObject: TypeAlias = dict[str, JsonValue]
#: A JSON value as a reader takes it (covariant: a ``dict[str, str]`` is one too).
JsonLike: TypeAlias = JsonScalar | Sequence["JsonLike"] | Mapping[str, "JsonLike"]
#: A JSON object as a reader takes it.
JsonMapping: TypeAlias = Mapping[str, JsonLike]
