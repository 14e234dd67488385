"""The powermeter types of the running EVerest, as its manager publishes them.

Before it starts modules, the 2026 manager publishes every type file retained on
``{prefix}type_definitions/{name}`` (``{"msg_type": ..., "data": {TypeName: schema}}``,
references written ``/units_signed#/SignedMeterValue``) and clears them before global
ready. Releases differ: 2025.12 and 2026.02 have no ``signed_meter_value`` in
``TransactionStartResponse``, whose ``additionalProperties`` is false, so with
``validate_schema`` on they refuse a start answer that carries one. The module therefore
shapes its answers by the types in use: those published, else its own schema (standalone,
or the 0.25 framework, which publishes none).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from lem_dcbm.everest import envelope
from lem_dcbm.everest.validation import InterfaceSchema, interface_document, own_schema

_LOGGER = logging.getLogger(__name__)

#: The type files the powermeter interface uses (``powermeter`` and what it references).
TYPE_FILES = ("powermeter", "units", "units_signed", "temperature")


def derive(node: object) -> object:
    """An EVerest type schema as draft-7: descriptions and keys beside ``$ref`` go, refs are local.

    ``/units_signed#/SignedMeterValue`` becomes ``#/definitions/units_signed/SignedMeterValue``;
    draft 7 ignores the siblings of ``$ref`` as EVerest's validator does.
    """
    if isinstance(node, list):
        return [derive(item) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str):
        unit, _, name = node["$ref"].lstrip("/").partition("#/")
        return {"$ref": f"#/definitions/{unit}/{name}"}
    return {key: derive(value) for key, value in node.items() if key != "description"}


def schema_from_types(types: Mapping[str, Mapping[str, object]], source: str) -> InterfaceSchema:
    """The interface under EVerest type files ``{file name: {TypeName: schema}}``.

    A referenced file that is not given is taken from the module's own schema.
    """
    definitions = dict(interface_document()["definitions"])
    definitions.update({name: derive(dict(body)) for name, body in types.items()})
    return InterfaceSchema(definitions, source)


class FrameworkTypes:
    """Collects the manager's published powermeter types; hands out the schema in use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[str, dict[str, Any]] = {}
        self._schema: InterfaceSchema | None = None

    def topics(self, prefix: str) -> dict[str, str]:
        """Topic -> type file name, for every file this class listens to."""
        return {f"{prefix}type_definitions/{name}": name for name in TYPE_FILES}

    def receive(self, name: str, payload: bytes) -> None:
        """Take one published type file; an empty payload (the manager's clean-up) is ignored."""
        if not payload:
            return
        try:
            data = envelope.decode(payload).data
        except envelope.EnvelopeError as exc:
            _LOGGER.warning("ignored the published types %s: %s", name, exc)
            return
        if not isinstance(data, dict):
            _LOGGER.warning("ignored the published types %s: data is not an object", name)
            return
        with self._lock:
            if self._types.get(name) == data:
                return
            self._types[name] = data
            self._schema = None
        if name == "powermeter":
            _LOGGER.info("answers follow the powermeter types the EVerest manager published")

    @property
    def published(self) -> bool:
        """True once the manager published the ``powermeter`` types."""
        with self._lock:
            return "powermeter" in self._types

    def schema(self) -> InterfaceSchema:
        """The published types when the manager sent ``powermeter``, else the module's own."""
        with self._lock:
            if "powermeter" not in self._types:
                return own_schema()
            if self._schema is None:
                self._schema = schema_from_types(
                    self._types, "the powermeter types the EVerest manager published"
                )
            return self._schema
