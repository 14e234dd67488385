"""Validation against the powermeter interface (``schemas/powermeter.json``).

Validators are compiled once per command or variable on first use and then reused for
every message. Problems are reported in the framework's style:
``At /value/evse_id of 5 - 5 is not of type 'string'``.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import best_match

_INSTANCE_EXCERPT = 80
_MESSAGE_EXCERPT = 300
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

FORMAT_CHECKER = FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    return True


@functools.cache
def interface_document() -> dict[str, Any]:
    """The interface schema document, loaded once."""
    text = resources.files("lem_dcbm.everest").joinpath("schemas/powermeter.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
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


def _compile(schema: dict[str, Any]) -> Draft7Validator:
    inlined = _inline(schema, interface_document()["definitions"])
    return Draft7Validator(inlined, format_checker=FORMAT_CHECKER)


def command_names() -> tuple[str, ...]:
    """The commands the interface declares."""
    return tuple(interface_document()["cmds"])


@functools.cache
def arguments_validator(command: str) -> Draft7Validator:
    """Validator of a command's whole ``args`` object (every argument required, no others)."""
    arguments = interface_document()["cmds"][command]["arguments"]
    return _compile(
        {
            "type": "object",
            "properties": arguments,
            "required": sorted(arguments),
            "additionalProperties": False,
        }
    )


@functools.cache
def result_validator(command: str) -> Draft7Validator:
    """Validator of a command's return value."""
    return _compile(interface_document()["cmds"][command]["result"])


@functools.cache
def var_validator(name: str) -> Draft7Validator:
    """Validator of a variable's value."""
    return _compile(interface_document()["vars"][name])


def _problem(validator: Draft7Validator, value: Any) -> str | None:
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


def check_arguments(command: str, args: Any) -> str | None:
    """The first problem of ``args`` for ``command``, or None when they are valid."""
    return _problem(arguments_validator(command), args)


def check_result(command: str, value: Any) -> str | None:
    """The first problem of a return value of ``command``, or None."""
    return _problem(result_validator(command), value)


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
_valid_shapes: dict[str, set[Any]] = {}


def _uses_value_keywords(schema: Any) -> bool:
    if isinstance(schema, dict):
        return any(key in _VALUE_KEYWORDS for key in schema) or any(
            _uses_value_keywords(part) for part in schema.values()
        )
    if isinstance(schema, list):
        return any(_uses_value_keywords(part) for part in schema)
    return False


@functools.cache
def _judged_by_shape(name: str) -> bool:
    """True when a value of ``name`` is valid or not by its structure and types alone."""
    return not _uses_value_keywords(var_validator(name).schema)


def _shape(value: Any) -> Any:
    """The structure and JSON types of ``value``, without the values themselves."""
    if isinstance(value, dict):
        return ("object", tuple((key, _shape(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_shape(item) for item in value))
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


def check_var(name: str, value: Any) -> str | None:
    """The first problem of a value of variable ``name``, or None.

    When the variable's schema judges only structure and types (the ``powermeter`` var),
    a shape once found valid is remembered: the 1 Hz publication is checked as strictly,
    without running the validator every second. A bad value always gets its own message.
    """
    if not _judged_by_shape(name):
        return _problem(var_validator(name), value)
    valid = _valid_shapes.setdefault(name, set())
    shape = _shape(value)
    if shape in valid:
        return None
    problem = _problem(var_validator(name), value)
    if problem is None:
        if len(valid) >= _SHAPES_KEPT:
            valid.clear()
        valid.add(shape)
    return problem
