"""Draft-7 schemas compiled to plain Python predicates: valid or not, without jsonschema.

jsonschema, with the libraries it imports (referencing, rpds, attrs, the bundled
metaschemas), costs a running module about 5 MB of memory, four times what the module's
own code costs, to judge a handful of small schemas: the powermeter interface's
arguments, results and variables, and the manifest's config entries. ``compile_check``
turns a schema that uses only the keywords those schemas use into a predicate with the
same verdict as ``jsonschema.Draft7Validator(schema).is_valid`` (types, ``properties``,
``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, numeric bounds,
string and array lengths, ``pattern``, the formats passed in). For any other validation
keyword (``$ref``, ``anyOf``, ``patternProperties``, ...) it returns None and the caller
uses jsonschema. Keywords that are not draft-7 validation keywords are ignored, as
jsonschema ignores them.

A predicate only says whether a value is valid. The framework-style message for an
invalid value comes from jsonschema, imported at the first invalid value, so a module
that only ever sees valid calls and sends valid answers never loads it.
``tests/unit/test_schema_check.py`` holds the verdicts equal to jsonschema's.
"""

from __future__ import annotations

import numbers
import operator
import re
from collections.abc import Callable, Mapping, Sequence, Sized

from lem_dcbm.errors import LemDcbmError

#: A compiled schema: True when a value conforms.
Check = Callable[[object], bool]
#: A format's check: False (or ValueError) for a string not in that format.
FormatCheck = Callable[[str], bool]

#: Draft-7 validation keywords no predicate is compiled for (jsonschema judges these).
UNSUPPORTED = frozenset(
    {
        "$ref",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "dependencies",
        "propertyNames",
        "contains",
        "uniqueItems",
        "multipleOf",
        "minProperties",
        "maxProperties",
        "additionalItems",
    }
)


class Unsupported(LemDcbmError):  # a signal that never leaves compile_check
    """The schema uses a keyword this module does not compile."""


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int)


_TYPES: Mapping[str, Check] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "number": _is_number,
    "integer": _is_integer,
}


def _unbool(value: object) -> object:
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    return value


_TRUE, _FALSE = object(), object()


def equal(one: object, two: object) -> bool:
    """JSON equality as jsonschema judges it: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return one.keys() == two.keys() and all(equal(one[key], two[key]) for key in one)
    return bool(_unbool(one) == _unbool(two))


def compile_check(schema: object, formats: Mapping[str, FormatCheck] | None = None) -> Check | None:
    """A predicate with jsonschema's draft-7 verdict on ``schema``, or None (see module doc)."""
    try:
        return _compile(schema, formats or {})
    except Unsupported:
        return None


def _compile(schema: object, formats: Mapping[str, FormatCheck]) -> Check:
    if schema is True:
        return lambda value: True
    if schema is False:
        return lambda value: False
    if not isinstance(schema, dict):
        raise Unsupported(repr(schema))
    if UNSUPPORTED.intersection(schema):
        raise Unsupported(", ".join(sorted(UNSUPPORTED.intersection(schema))))
    checks: list[Check] = []
    if "type" in schema:
        checks.append(_type_check(schema["type"]))
    if "enum" in schema:
        choices = list(schema["enum"])
        checks.append(lambda value: any(equal(choice, value) for choice in choices))
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda value: equal(value, const))
    checks += _number_checks(schema)
    checks += _string_checks(schema, formats)
    checks += _array_checks(schema, formats)
    checks += _object_checks(schema, formats)
    if not checks:
        return lambda value: True
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _type_check(kind: object) -> Check:
    names = [kind] if isinstance(kind, str) else kind
    try:
        if not isinstance(names, list):
            raise TypeError(kind)
        tests = [_TYPES[name] for name in names]
    except (KeyError, TypeError) as exc:
        raise Unsupported(f"type {kind!r}") from exc
    if len(tests) == 1:
        return tests[0]
    return lambda value: any(test(value) for test in tests)


#: Numeric keywords and the comparison that fails a value against the keyword's limit.
_BOUNDS: Mapping[str, Callable[[float, float], bool]] = {
    "minimum": operator.lt,
    "maximum": operator.gt,
    "exclusiveMinimum": operator.le,
    "exclusiveMaximum": operator.ge,
}


def _number_checks(schema: Mapping[str, object]) -> list[Check]:
    checks: list[Check] = []
    for keyword, fails in _BOUNDS.items():
        if keyword not in schema:
            continue
        limit = schema[keyword]
        if not isinstance(limit, int | float) or isinstance(limit, bool):
            raise Unsupported(f"{keyword} {limit!r}")

        def within(
            value: object, fails: Callable[[float, float], bool] = fails, limit: float = limit
        ) -> bool:
            return not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and fails(value, limit)
            )

        checks.append(within)
    return checks


def _length_checks(
    schema: Mapping[str, object], kind: type[Sized], least: str, most: str
) -> list[Check]:
    """Checks of ``len()`` for values of ``kind`` (strings: code points, as jsonschema)."""
    checks: list[Check] = []
    if least in schema:
        shortest = _count(schema, least)
        checks.append(lambda value: not isinstance(value, kind) or len(value) >= shortest)
    if most in schema:
        longest = _count(schema, most)
        checks.append(lambda value: not isinstance(value, kind) or len(value) <= longest)
    return checks


def _count(schema: Mapping[str, object], keyword: str) -> int:
    value = schema[keyword]
    if not isinstance(value, int) or isinstance(value, bool):
        raise Unsupported(f"{keyword} {value!r}")
    return value


def _string_checks(schema: Mapping[str, object], formats: Mapping[str, FormatCheck]) -> list[Check]:
    checks = _length_checks(schema, str, "minLength", "maxLength")
    if "pattern" in schema:
        source = schema["pattern"]
        if not isinstance(source, str):
            raise Unsupported(f"pattern {source!r}")
        pattern = re.compile(source)
        checks.append(lambda value: not isinstance(value, str) or bool(pattern.search(value)))
    name = schema.get("format", "")
    format_check = formats.get(name) if isinstance(name, str) else None
    if format_check is not None:

        def conforms(value: object, check: FormatCheck = format_check) -> bool:
            if not isinstance(value, str):
                return True
            try:
                return bool(check(value))
            except ValueError:
                return False

        checks.append(conforms)
    return checks


def _array_checks(schema: Mapping[str, object], formats: Mapping[str, FormatCheck]) -> list[Check]:
    checks = _length_checks(schema, list, "minItems", "maxItems")
    if "items" in schema:
        if isinstance(schema["items"], list):
            raise Unsupported("items as a list")
        item = _compile(schema["items"], formats)
        checks.append(lambda value: not isinstance(value, list) or all(map(item, value)))
    return checks


def _object_checks(schema: Mapping[str, object], formats: Mapping[str, FormatCheck]) -> list[Check]:
    checks: list[Check] = []
    if "required" in schema:
        required = schema["required"]
        if not isinstance(required, list):
            raise Unsupported(f"required {required!r}")
        checks.append(
            lambda value: not isinstance(value, dict) or all(k in value for k in required)
        )
    declared = schema.get("properties", {})
    if not isinstance(declared, dict):
        raise Unsupported(f"properties {declared!r}")
    properties: dict[str, Check] = {name: _compile(sub, formats) for name, sub in declared.items()}
    if properties:

        def known(value: object) -> bool:
            if not isinstance(value, dict):
                return True
            return all(check(value[name]) for name, check in properties.items() if name in value)

        checks.append(known)
    if "additionalProperties" in schema:
        extra = _compile(schema["additionalProperties"], formats)

        def others(value: object) -> bool:
            if not isinstance(value, dict):
                return True
            return all(extra(item) for key, item in value.items() if key not in properties)

        checks.append(others)
    return checks
