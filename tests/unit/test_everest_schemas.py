"""Our powermeter schema file is EVerest's type definitions under draft-7 rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lem_dcbm.everest import validation
from lem_dcbm.everest.framework_types import derive

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "everest-types"
SCHEMA_FILE = Path(validation.__file__).resolve().parent / "schemas" / "powermeter.json"


def derived_document() -> dict[str, Any]:
    """The whole schema document as derived from the fixture copies of EVerest's YAML."""
    definitions = {
        path.stem: derive(yaml.safe_load(path.read_text())["types"])
        for path in sorted(FIXTURES.glob("*.yaml"))
        if not path.stem.startswith("interface-")
    }
    interface = yaml.safe_load((FIXTURES / "interface-powermeter.yaml").read_text())
    cmds = {
        name: {
            "arguments": {arg: derive(spec) for arg, spec in cmd["arguments"].items()},
            "result": derive(cmd["result"]),
        }
        for name, cmd in interface["cmds"].items()
    }
    variables = {name: derive(spec) for name, spec in interface["vars"].items()}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": "powermeter interface of EVerest; keys beside $ref dropped (draft-7)",
        "cmds": cmds,
        "vars": variables,
        "definitions": definitions,
    }


def test_schema_file_is_the_derived_document() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == derived_document()


def test_no_ref_has_siblings_and_every_ref_resolves() -> None:
    document = json.loads(SCHEMA_FILE.read_text())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                assert list(node) == ["$ref"]
                _, unit, name = node["$ref"].removeprefix("#/").split("/")
                assert name in document["definitions"][unit]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


if __name__ == "__main__":
    SCHEMA_FILE.write_text(json.dumps(derived_document(), indent=2) + "\n")
