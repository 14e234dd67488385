"""Validation against the powermeter interface (``schemas/powermeter.json``).

An ``InterfaceSchema`` is the interface under one set of type definitions: the module's
own (``own_schema()``), or those the running EVerest manager published
(``framework_types``). Each command's arguments and result and each variable's schema
is compiled once, on first use, by ``lem_dcbm.schema_check`` into a plain predicate;
jsonschema (draft 7, as the framework) is loaded only to word the problem of an invalid
value, or to judge a schema with a keyword the predicates do not cover. Problems are
reported in the framework's style: ``At /value/evse_id of 5 - 5 is not of type 'string'``.

``shape_result`` and ``shape_var`` drop what a schema forbids (a property where
``additionalProperties`` is false), so an answer never carries a property the running
framework refuses; the module-level functions check against the module's own schema.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lem_dcbm.schema_check import Check, compile_check

if TYPE_CHECKING:
    from jsonschema import Draft7Validator, FormatChecker

_INSTANCE_EXCERPT = 80
_MESSAGE_EXCERPT = 300
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if not match:
        return False
    # Not fromisoformat: before Python 3.11 it takes neither "Z" nor a fraction of other
    # than 3 or 6 digits, both valid RFC 3339. The constructor checks the date and time
    # fields as strptime would, without strptime's cost (this runs at every publication)
    # or its import of locale and calendar.
    datetime(
        int(value[0:4]),
        int(value[5:7]),
        int(value[8:10]),
        int(value[11:13]),
        int(value[14:16]),
        int(value[17:19]),
    )
    zone = match.group(2)
    if zone.upper() != "Z" and (int(zone[1:3]) > 23 or int(zone[4:6]) > 59):
        raise ValueError(f"UTC offset out of range: {zone}")
    return True


#: The formats the interface's schemas are checked for (jsonschema checks no others here).
FORMATS = {"date-time": _is_rfc3339}


@functools.cache
def format_checker() -> FormatChecker:
    """jsonschema's checker of ``FORMATS``, built with jsonschema's first use."""
    # Imported here: jsonschema words problems; valid values never load it.
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("date-time", raises=ValueError)(_is_rfc3339)
    return checker


@functools.cache
def interface_document() -> dict[str, Any]:
    """The interface schema document, loaded once."""
    # Beside this file, not through importlib.resources (see config.load_manifest).
    text = (Path(__file__).parent / "schemas" / "powermeter.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _inline(node: object, definitions: Mapping[str, object]) -> object:
    """``node`` with every ``#/definitions/...`` reference replaced by its definition.

    The powermeter types are not recursive, so the result is finite; a validator of an
    inlined schema never resolves references, which keeps the 1 Hz var check cheap.
    """
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        target: Any = definitions
        for part in ref.removeprefix("#/definitions/").split("/"):
            target = target[part]
        return _inline(target, definitions)
    return {key: _inline(value, definitions) for key, value in node.items()}


def command_names() -> tuple[str, ...]:
    """The commands the interface declares."""
    return tuple(interface_document()["cmds"])


#: Schema keywords that judge a value itself, not only its structure and types. ``format``
#: is not among them: its one checked format (date-time) is part of a string's shape.
_VALUE_KEYWORDS = frozenset(
    {
        "enum",
        "const",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
    }
)
#: Valid shapes remembered per variable (a publication has one shape, a few at most).
_SHAPES_KEPT = 16


@dataclass
class _Compiled:
    """One command's arguments or result, or one variable: its schema and its checks."""

    #: The schema with every reference inlined.
    schema: dict[str, Any]
    #: The compiled verdict, or None when the schema needs jsonschema for it.
    check: Check | None
    validator: Draft7Validator | None = None

    def jsonschema_validator(self) -> Draft7Validator:
        """jsonschema's validator of ``schema``, built on first use."""
        if self.validator is None:
            # Imported here: jsonschema words problems; valid values never load it.
            from jsonschema import Draft7Validator

            self.validator = Draft7Validator(self.schema, format_checker=format_checker())
        return self.validator

    def problem(self, value: object) -> str | None:
        """The first problem of ``value`` in the framework's words, or None when valid."""
        if self.check is not None and self.check(value):
            return None
        return _problem(self.jsonschema_validator(), value)


class InterfaceSchema:
    """The powermeter interface's commands and variables under one set of type definitions."""

    def __init__(self, definitions: Mapping[str, object], source: str) -> None:
        #: The draft-7 definitions per type file (``powermeter``, ``units_signed``, ...).
        self.definitions = definitions
        #: Where the definitions come from, for log lines.
        self.source = source
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._valid_shapes: dict[str, set[Hashable]] = {}
        self._by_shape: dict[str, bool] = {}
        self._lock = threading.Lock()

    def _compile(self, kind: str, name: str) -> _Compiled:
        key = (kind, name)
        with self._lock:
            found = self._compiled.get(key)
        if found is not None:
            return found
        interface = interface_document()
        schema: dict[str, Any]
        if kind == "arguments":
            arguments = interface["cmds"][name]["arguments"]
            schema = {
                "type": "object",
                "properties": arguments,
                "required": sorted(arguments),
                "additionalProperties": False,
            }
        elif kind == "result":
            schema = interface["cmds"][name]["result"]
        else:
            schema = interface["vars"][name]
        # An object schema inlines to an object schema.
        inlined = cast("dict[str, Any]", _inline(schema, self.definitions))
        compiled = _Compiled(inlined, compile_check(inlined, FORMATS))
        with self._lock:
            return self._compiled.setdefault(key, compiled)

    def arguments_validator(self, command: str) -> Draft7Validator:
        """jsonschema's validator of a command's whole ``args`` object (all required, no others)."""
        return self._compile("arguments", command).jsonschema_validator()

    def result_validator(self, command: str) -> Draft7Validator:
        """jsonschema's validator of a command's return value."""
        return self._compile("result", command).jsonschema_validator()

    def var_validator(self, name: str) -> Draft7Validator:
        """jsonschema's validator of a variable's value."""
        return self._compile("var", name).jsonschema_validator()

    def check_arguments(self, command: str, args: object) -> str | None:
        """The first problem of ``args`` for ``command``, or None when they are valid."""
        return self._compile("arguments", command).problem(args)

    def check_result(self, command: str, value: object) -> str | None:
        """The first problem of a return value of ``command``, or None."""
        return self._compile("result", command).problem(value)

    def shape_result(self, command: str, value: object) -> tuple[object, list[str]]:
        """``value`` without what the result schema forbids, and the paths dropped."""
        return _drop_forbidden(self._compile("result", command).schema, value, "")

    def shape_var(self, name: str, value: object) -> tuple[object, list[str]]:
        """A variable's ``value`` without what its schema forbids, and the paths dropped."""
        return _drop_forbidden(self._compile("var", name).schema, value, "")

    def shape_and_check_var(self, name: str, value: object) -> tuple[object, list[str], str | None]:
        """``shape_var`` then ``check_var``: the value to publish, what was dropped, a problem.

        A value whose shape was found valid before has nothing to drop either (a valid
        value holds no property its schema forbids), so the 1 Hz publication costs one
        look at its shape.
        """
        if self._judged_by_shape(name) and _shape(value) in self._valid_shapes.get(name, ()):
            return value, [], None
        value, dropped = self.shape_var(name, value)
        return value, dropped, self.check_var(name, value)

    def _judged_by_shape(self, name: str) -> bool:
        by_shape = self._by_shape.get(name)
        if by_shape is None:
            schema = self._compile("var", name).schema
            by_shape = self._by_shape.setdefault(name, not _uses_value_keywords(schema))
        return by_shape

    def check_var(self, name: str, value: object) -> str | None:
        """The first problem of a value of variable ``name``, or None.

        When the variable's schema judges only structure and types (the ``powermeter``
        var), a shape once found valid is remembered: the 1 Hz publication is checked as
        strictly, without running the check every second. A bad value always gets its
        own message.
        """
        compiled = self._compile("var", name)
        if not self._judged_by_shape(name):
            return compiled.problem(value)
        valid = self._valid_shapes.setdefault(name, set())
        shape = _shape(value)
        if shape in valid:
            return None
        problem = compiled.problem(value)
        if problem is None:
            if len(valid) >= _SHAPES_KEPT:
                valid.clear()
            valid.add(shape)
        return problem


@functools.cache
def own_schema() -> InterfaceSchema:
    """The interface under the module's own type definitions (``schemas/powermeter.json``)."""
    return InterfaceSchema(interface_document()["definitions"], "the module's own schema")


def _drop_forbidden(schema: object, value: object, where: str) -> tuple[object, list[str]]:
    """``value`` without the properties an (inlined) object schema forbids, at any depth."""
    if not isinstance(schema, dict):
        return value, []
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items: list[object] = []
        dropped_in_items: list[str] = []
        for index, item in enumerate(value):
            kept_item, below = _drop_forbidden(schema["items"], item, f"{where}/{index}")
            items.append(kept_item)
            dropped_in_items += below
        return (items if dropped_in_items else value), dropped_in_items
    if not isinstance(value, dict):
        return value, []
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    closed = schema.get("additionalProperties") is False
    kept: dict[str, object] = {}
    dropped: list[str] = []
    for key, item in value.items():
        if key in properties:
            kept[key], below = _drop_forbidden(properties[key], item, f"{where}/{key}")
            dropped += below
        elif closed:
            dropped.append(f"{where}/{key}")
        else:
            kept[key] = item
    return (kept if dropped else value), dropped


def _problem(validator: Draft7Validator, value: object) -> str | None:
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    pointer = "/" + "/".join(str(part) for part in error.absolute_path)
    shown = json.dumps(error.instance, ensure_ascii=False, sort_keys=True)
    if len(shown) > _INSTANCE_EXCERPT:
        shown = shown[: _INSTANCE_EXCERPT - 3] + "..."
    message = error.message
    if len(message) > _MESSAGE_EXCERPT:
        message = message[: _MESSAGE_EXCERPT - 3] + "..."
    return f"At {pointer} of {shown} - {message}"


def arguments_validator(command: str) -> Draft7Validator:
    """Validator of a command's ``args`` under the module's own schema."""
    return own_schema().arguments_validator(command)


def result_validator(command: str) -> Draft7Validator:
    """Validator of a command's return value under the module's own schema."""
    return own_schema().result_validator(command)


def var_validator(name: str) -> Draft7Validator:
    """Validator of a variable's value under the module's own schema."""
    return own_schema().var_validator(name)


def check_arguments(command: str, args: object) -> str | None:
    """The first problem of ``args`` for ``command``, or None when they are valid."""
    return own_schema().check_arguments(command, args)


def check_result(command: str, value: object) -> str | None:
    """The first problem of a return value of ``command`` (own schema), or None."""
    return own_schema().check_result(command, value)


def check_var(name: str, value: object) -> str | None:
    """The first problem of a value of variable ``name`` (own schema), or None."""
    return own_schema().check_var(name, value)


def _uses_value_keywords(schema: object) -> bool:
    if isinstance(schema, dict):
        return any(key in _VALUE_KEYWORDS for key in schema) or any(
            _uses_value_keywords(part) for part in schema.values()
        )
    if isinstance(schema, list):
        return any(_uses_value_keywords(part) for part in schema)
    return False


def _shape(value: object) -> Hashable:
    """The structure and JSON types of ``value``, without the values themselves."""
    # Floats first: this runs for every publication of the var, a float at most leaves.
    if type(value) is float:
        return "float"
    if isinstance(value, dict):
        return ("object", tuple([(key, _shape(item)) for key, item in value.items()]))
    if isinstance(value, list):
        return ("array", tuple([_shape(item) for item in value]))
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return ("string", _is_date_time(value))
    return type(value).__name__


def _is_date_time(value: str) -> bool:
    try:
        return _is_rfc3339(value)
    except ValueError:
        return False
