"""EVerest's AsyncAPI definition of the powermeter API, read at test time from ``../shared``.

The project does not copy it: tests that need it skip, with one line, when it is absent.
Every payload the module sends is checked against the message schema of its channel.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from lem_dcbm.everest.validation import format_checker

API_DIR = Path(__file__).parents[3] / "shared" / "reference" / "everest" / "api"
DEFINITION = API_DIR / "powermeter_API.yaml"
_URI = "urn:everest:powermeter_API"
#: The message the module sends on each ``m2e`` topic, by the topic's last part.
M2E_MESSAGES = {
    "powermeter_values": "send_powermeter_values",
    "public_key_ocmf": "send_public_key_ocmf",
    "communication_check": "send_communication_check",
}
#: The reply message of each request.
REPLY_MESSAGES = {
    "start_transaction": "send_reply_start_transaction",
    "stop_transaction": "send_reply_stop_transaction",
}


def require_definition() -> None:
    """Skip the calling test when the AsyncAPI definition is not beside the checkout."""
    if not DEFINITION.is_file():
        pytest.skip(f"EVerest's powermeter API definition is not at {DEFINITION}")


@functools.cache
def definition() -> dict[str, Any]:
    """The AsyncAPI document."""
    document: dict[str, Any] = yaml.safe_load(DEFINITION.read_text(encoding="utf-8"))
    return document


@functools.cache
def message_validator(message: str) -> Draft7Validator:
    """Validator of ``components.messages.{message}.payload``, references resolved."""
    resource = Resource.from_contents(definition(), default_specification=DRAFT7)
    registry: Registry[Any] = Registry().with_resource(_URI, resource)
    schema = {"$ref": f"{_URI}#/components/messages/{message}/payload"}
    return Draft7Validator(schema, registry=registry, format_checker=format_checker())


def problems(message: str, value: Any) -> list[str]:
    """Every way ``value`` breaks the payload schema of ``message`` (empty: valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in message_validator(message).iter_errors(value)
    ]


def schema(name: str) -> dict[str, Any]:
    """``components.schemas.{name}``."""
    found: dict[str, Any] = definition()["components"]["schemas"][name]
    return found
