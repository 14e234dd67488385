"""manifest.yaml is a valid EVerest manifest and a superset of the C++ module's config."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from lem_dcbm.config import CLAMPS, load_manifest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CPP_KEYWORDS = ("type", "default", "minimum", "maximum", "enum")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifest.yaml").read_text())


@pytest.fixture(scope="module")
def everest_schema() -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / "everest-manifest-schema.yaml").read_text())


@pytest.fixture(scope="module")
def cpp_manifest() -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / "LemDCBM400600-manifest.yaml").read_text())


def _validate(document: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


def test_manifest_passes_everest_manifest_schema(
    manifest: dict[str, Any], everest_schema: dict[str, Any]
) -> None:
    _validate(manifest, everest_schema)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda m: m["config"]["port"].pop("description"), "entry without description"),
        (lambda m: m["metadata"].__setitem__("authors", ["x"]), "one-character author"),
        (lambda m: m["config"]["port"].__setitem__("type", "int"), "unknown type name"),
        (lambda m: m.__setitem__("provides", {}), "no implementation"),
    ],
)
def test_schema_check_catches_what_the_manager_refuses(
    manifest: dict[str, Any], everest_schema: dict[str, Any], mutate: Any, why: str
) -> None:
    broken = copy.deepcopy(manifest)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, everest_schema)


#: Keys whose range is narrowed to what the meter accepts: outside it every transaction
#: start fails at the meter, so a bad value is refused at start-up with exit 2 instead.
NARROWED = {"cable_id", "tariff_id"}


def test_every_cpp_key_is_present_with_the_same_type_default_and_bounds(
    manifest: dict[str, Any], cpp_manifest: dict[str, Any]
) -> None:
    ours = manifest["config"]
    for key, entry in cpp_manifest["config"].items():
        assert key in ours, key
        for word in CPP_KEYWORDS:
            if key in NARROWED and word in ("minimum", "maximum"):
                continue
            assert ours[key].get(word) == entry.get(word), (key, word)


def test_clamped_keys_take_any_integer_as_the_cpp_manifest_does(
    manifest: dict[str, Any], cpp_manifest: dict[str, Any]
) -> None:
    # The EVerest manager checks a config against the manifest before the module sees it:
    # a bound here would refuse a value the C++ module runs with.
    for key, clamp in CLAMPS.items():
        assert "minimum" not in manifest["config"][key], key
        assert "maximum" not in manifest["config"][key], key
        assert "minimum" not in cpp_manifest["config"][key], key
        default = manifest["config"][key]["default"]
        assert clamp.lowest <= default <= (clamp.highest or default), key


def test_narrowed_ranges_keep_every_value_that_can_work(manifest: dict[str, Any]) -> None:
    config = manifest["config"]
    ranges = {key: (config[key]["minimum"], config[key]["maximum"]) for key in NARROWED}
    # The meter's own limits (operation manual): tariff 0..4, cable compensation 0..7.
    assert ranges["tariff_id"] == (0, 4)
    assert ranges["cable_id"] == (0, 7)
    for key in NARROWED:
        assert ranges[key][0] <= config[key]["default"] <= ranges[key][1], key


def test_descriptions_are_our_own(manifest: dict[str, Any], cpp_manifest: dict[str, Any]) -> None:
    for key, entry in cpp_manifest["config"].items():
        assert manifest["config"][key]["description"].strip() != entry["description"].strip(), key


def test_own_keys(manifest: dict[str, Any]) -> None:
    config = manifest["config"]
    assert config["api_version"]["enum"] == ["auto", "v1", "v2"]
    assert config["api_version"]["default"] == "auto"
    assert config["signed_start_value"] == config["signed_start_value"] | {
        "type": "boolean",
        "default": True,
    }
    assert config["journal_dir"]["default"] == ""
    assert config["error_namespace"]["enum"] == ["powermeter", "generic"]
    assert config["error_namespace"]["default"] == "powermeter"
    publish = config["publish_interval_ms"]
    assert (publish["type"], publish["default"], publish["minimum"], publish["maximum"]) == (
        "integer",
        1000,
        200,
        60000,
    )


def test_provides_main_powermeter_and_metadata(manifest: dict[str, Any]) -> None:
    assert manifest["provides"]["main"]["interface"] == "powermeter"
    assert manifest["metadata"]["license"].endswith("Apache-2.0")
    assert all(len(author) >= 2 for author in manifest["metadata"]["authors"])


def test_the_package_ships_the_same_manifest(manifest: dict[str, Any]) -> None:
    assert load_manifest() == manifest


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _no_repeated_keys(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key) for key, _ in node.value]
    repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
    assert not repeated, f"manifest.yaml gives these keys twice: {repeated}"
    return yaml.SafeLoader.construct_mapping(loader, node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_repeated_keys)


def test_no_key_is_given_twice() -> None:
    # The EVerest manager and PyYAML would silently take the last of two entries.
    assert yaml.load((ROOT / "manifest.yaml").read_text(), Loader=_StrictLoader)  # noqa: S506
