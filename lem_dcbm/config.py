"""Module configuration: ``manifest.yaml`` is the single source of keys, types and defaults.

Values come from an EVerest config file (``active_modules: <id>: config_module``) or
from the manager's configuration response; both end in ``config_from_mapping``, which
validates them with a JSON schema built from the manifest plus the checks a schema
cannot express, and raises ``ConfigError(key, problem)`` for the first violation.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lem_dcbm import MODULE_NAME
from lem_dcbm.bounded_json import loads_bounded
from lem_dcbm.broker_tls import broker_ssl_context, read_password_file
from lem_dcbm.errors import ConfigError, cut, shown
from lem_dcbm.schema_check import compile_check

#: Names the module is known by in an EVerest config's ``module:`` entry: its own first,
#: then the C++ module's, so that a config written for that one runs standalone unchanged.
MODULE_NAMES = (MODULE_NAME, "LemDCBM400600", "lem-dcbm", "lem_dcbm")
_log = logging.getLogger(__name__)
_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
_SCHEMA_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum")
_TIMEZONE = re.compile(r"^([+-])(\d{2}):(\d{2})$")
# An NTP port counts only when its server is in use (the server set, and for the second
# one the first set too): EVerest's own configs write port 0 beside an empty server.
_NTP_SERVERS = (
    ("ntp_server_1_ip_addr", "ntp_server_1_port"),
    ("ntp_server_2_ip_addr", "ntp_server_2_port"),
)


@dataclass(frozen=True)
class Clamp:
    """The range a key is held to when a value outside it is given, and why.

    The C++ module takes any integer for these keys, so a config written for it must
    start here too: a value outside the range is used at its nearest end, with one
    warning line, instead of stopping the charger with exit 2.
    """

    #: The least value used.
    lowest: int
    #: The greatest value used; None: no upper end.
    highest: int | None
    #: What the upper end protects, for the warning line.
    reason: str = ""


#: Keys whose values are clamped rather than refused (their manifest entries have no
#: bounds, as in the C++ manifest, so that the EVerest manager takes any integer too).
CLAMPS: dict[str, Clamp] = {
    "resilience_initial_connection_retries": Clamp(0, None),
    "resilience_initial_connection_retry_delay": Clamp(
        0,
        600_000,
        "a longer pause leaves a meter back after an outage unasked and EvseManager without values",
    ),
    "resilience_transaction_request_retries": Clamp(
        0,
        10,
        "EvseManager waits for the answer to a transaction start or stop, and more "
        "attempts only keep it waiting for a meter that does not answer",
    ),
    "resilience_transaction_request_retry_delay": Clamp(
        0, 10_000, "EvseManager waits for the answer to a transaction start or stop"
    ),
}


@dataclass(frozen=True, kw_only=True)
class ModuleConfig:
    """Validated module configuration; one field per key of ``manifest.yaml``."""

    #: Address (IPv4 or host name) of the meter's REST API.
    ip_address: str
    #: TCP port of the meter's REST API.
    port: int = 80
    #: Local network interface to send meter requests from; empty: any.
    interface: str = ""
    #: The meter's pinned HTTPS certificate (PEM); empty: plain HTTP.
    meter_tls_certificate: str = ""
    #: First NTP server (IPv4); empty: the meter clock follows this system's UTC time.
    ntp_server_1_ip_addr: str = ""
    #: UDP port of the first NTP server.
    ntp_server_1_port: int = 123
    #: Optional second NTP server (IPv4).
    ntp_server_2_ip_addr: str = ""
    #: UDP port of the second NTP server.
    ntp_server_2_port: int = 123
    #: UTC offset of the meter's local time, ``+HH:MM``.
    meter_timezone: str = "+00:00"
    #: Daylight saving rules as a JSON object (text).
    meter_dst: str = (
        '{"activated": false, "offset": 60, "start": {"order": "last", "day": "sunday", '
        '"month": "march", "hour": "T01:00Z"}, "end": {"order": "last", "day": "sunday", '
        '"month": "october", "hour": "T01:00Z" }}'
    )
    #: What makes the host clock fit for the meter: ``kernel-or-meter``, ``meter``, ``always``.
    host_clock_trust: str = "kernel-or-meter"
    #: Largest difference from the meter's valid clock (and kernel error) accepted, s.
    host_clock_max_skew_s: int = 60
    #: Further attempts to reach the meter at start-up.
    resilience_initial_connection_retries: int = 25
    #: Pause between start-up attempts, ms.
    resilience_initial_connection_retry_delay: int = 10000
    #: Further attempts of a transaction request.
    resilience_transaction_request_retries: int = 3
    #: Pause between attempts of a transaction request, ms.
    resilience_transaction_request_retry_delay: int = 250
    #: Cable loss compensation profile.
    cable_id: int = 0
    #: Tariff number of every transaction.
    tariff_id: int = 0
    #: OCMF identification type in the meter's numbering; -1: leave the meter's setting.
    IT: int = -1
    #: OCMF SC field (v2 API).
    SC: int = 0
    #: OCMF UV field (v2 API); empty: not sent.
    UV: str = ""
    #: OCMF UD field (v2 API); empty: not sent.
    UD: str = ""
    #: Temperature that raises VendorWarning, degrees Celsius.
    temperature_warning_level_C: float = 5000.0
    #: Temperature that raises VendorError, degrees Celsius.
    temperature_error_level_C: float = 5000.0
    #: Hysteresis for clearing temperature warnings and errors, kelvin.
    temperature_hysteresis_K: float = 3.0
    #: Time a temperature must stay above a level before it counts, ms.
    temperature_min_time_as_valid_ms: int = 5000
    #: Timeout of one HTTP request to the meter, ms.
    command_timeout_ms: int = 5000
    #: REST API generation: ``auto``, ``v1`` or ``v2``.
    api_version: str = "auto"
    #: Return the signed begin reading from ``start_transaction``.
    signed_start_value: bool = True
    #: Directory of the transaction journal; empty: chosen at run time.
    journal_dir: str = ""
    #: Most transactions the journal keeps (finished ones beyond it are dropped).
    journal_max_transactions: int = 1000
    #: Days a finished transaction stays in the journal; 0: no age limit.
    journal_max_age_days: int = 400
    #: Error namespace: ``powermeter`` or ``generic``.
    error_namespace: str = "powermeter"
    #: Period of the powermeter publication, ms.
    publish_interval_ms: int = 1000
    #: Period of the meter status (health bits) read, ms.
    status_poll_interval_ms: int = 5000
    #: The EVerest release whose EvseManager gets the errors (VendorWarning or a log line).
    error_profile: str = "everest-main"
    #: How long a stop waits for the meter's record before answering without it, ms.
    stop_record_wait_ms: int = 30000
    #: The longest a command arriving at start-up waits for the meter to be set up, ms.
    startup_command_wait_ms: int = 60000
    #: The longest a stop inside the meter's minimum duration waits for it to pass, ms.
    stop_minimum_wait_ms: int = 15000
    #: The meter's minimum transaction duration, ms (shorter only for simulators).
    meter_min_transaction_ms: int = 120000
    #: Idle time a record no transaction event carries rides on the powermeter var, ms.
    record_on_powermeter_ms: int = 905000
    #: ``enforce``, or ``report`` (simulations only): pass on records failing identity checks.
    record_identity_checks: str = "enforce"
    #: API mode: topic prefixes a request's replyTo may start with besides the API's own
    #: reply space, separated by blanks or commas; ``#``: any topic.
    api_reply_topics: str = ""

    @property
    def api_reply_prefixes(self) -> tuple[str, ...]:
        """``api_reply_topics`` split into its prefixes."""
        return reply_prefixes(self.api_reply_topics)

    @property
    def meter_dst_settings(self) -> dict[str, Any]:
        """``meter_dst`` parsed (validated at load time)."""
        value: dict[str, Any] = json.loads(self.meter_dst)
        return value


# --- the manifest and the schema built from it -----------------------------------


def load_manifest(path: Path | None = None) -> dict[str, Any]:
    """Read a manifest; by default the one shipped inside the package."""
    if path is None:
        # Beside this file, not through importlib.resources: its file reader imports
        # zipfile, which would stay in a running module's memory (0.2 MB) for one read.
        text = Path(__file__).with_name("manifest.yaml").read_text(encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    manifest = yaml.safe_load(text)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise ConfigError("manifest", "has no 'config' mapping")
    return manifest


@functools.cache
def _packaged_manifest() -> dict[str, Any]:
    return load_manifest()


def config_schema(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A draft-7 schema for the ``config`` block of ``manifest``."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for key, entry in manifest["config"].items():
        schema: dict[str, Any] = {"type": _JSON_TYPES[entry["type"]]}
        schema.update({word: entry[word] for word in _SCHEMA_KEYWORDS if word in entry})
        if "default" in entry:
            schema["default"] = entry["default"]
        else:
            required.append(key)
        properties[key] = schema
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


# --- validation ----------------------------------------------------------------


def config_from_mapping(
    values: Mapping[str, Any], manifest: Mapping[str, Any] | None = None
) -> ModuleConfig:
    """Validate ``values``, fill in defaults and build a ``ModuleConfig``."""
    manifest = manifest if manifest is not None else _packaged_manifest()
    schema = config_schema(manifest)
    properties: dict[str, Any] = schema["properties"]
    for key in values:
        if key not in properties:
            raise ConfigError(str(key), unknown_key_problem(str(key), properties))
    for key in schema["required"]:
        if key not in values:
            raise ConfigError(key, _missing_problem(key, values))
    for key, value in values.items():
        _check_schema(key, value, properties[key])
    complete = {key: values.get(key, spec.get("default")) for key, spec in properties.items()}
    for key, spec in properties.items():
        if spec["type"] == "number":
            complete[key] = float(complete[key])
        elif spec["type"] == "integer":
            complete[key] = int(complete[key])
    for key, clamp in CLAMPS.items():
        if key in properties:
            complete[key] = _clamped(key, complete[key], clamp)
    _check_semantics(complete)
    known = {f.name for f in fields(ModuleConfig)}
    return ModuleConfig(**{key: value for key, value in complete.items() if key in known})


def unknown_key_problem(key: str, known: Mapping[str, object]) -> str:
    """``unknown key``, with the closest known key when one is close enough to be meant."""
    # Imported here: only a config with a mistake needs it, a running module never does.
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    if not close:
        lowered = {name.lower(): name for name in known}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key (not declared in manifest.yaml){hint}"


def _missing_problem(key: str, values: Mapping[str, object]) -> str:
    """``missing``, or where the key is when it sits one level too deep (indentation)."""
    for parent, value in values.items():
        if isinstance(value, Mapping) and key in value:
            return (
                f"missing at the level of the other keys; it is nested under '{parent}' "
                "(indented one level too deep?)"
            )
    return "missing; it is required and has no default"


def _clamped(key: str, value: int, clamp: Clamp) -> int:
    """``value`` within ``clamp``; one warning line when it was outside."""
    if value < clamp.lowest:
        _log.warning(
            "config key '%s': %d is below %d; using %d", key, value, clamp.lowest, clamp.lowest
        )
        return clamp.lowest
    if clamp.highest is not None and value > clamp.highest:
        _log.warning(
            "config key '%s': %d is above %d; using %d (%s)",
            key,
            value,
            clamp.highest,
            clamp.highest,
            clamp.reason,
        )
        return clamp.highest
    return value


def _check_schema(key: str, value: object, spec: dict[str, Any]) -> None:
    check = compile_check(spec)
    if check is not None and check(value):
        return
    # Imported here: only a bad value (or a spec beyond schema_check) needs jsonschema.
    from jsonschema import Draft7Validator

    error = next(iter(Draft7Validator(spec).iter_errors(value)), None)
    if error is None:
        return
    if error.validator == "type":
        raise ConfigError(key, f"expected {spec['type']}, got {_describe(value)}")
    if error.validator == "enum":
        choices = ", ".join(str(choice) for choice in spec["enum"])
        raise ConfigError(key, f"must be one of {choices}; got {shown(value)}")
    bound = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if error.validator in bound:
        limit = spec[str(error.validator)]
        raise ConfigError(key, f"must be {bound[str(error.validator)]} {limit}, got {shown(value)}")
    raise ConfigError(key, cut(error.message, 200))


def _describe(value: object) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value))
    if kind is None:
        kind = (
            "list" if isinstance(value, list) else "mapping" if isinstance(value, dict) else "null"
        )
    return f"{kind} {shown(value, 60)}"


#: One DNS label (RFC 1123); underscores too, as container and test networks use them.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def is_host(text: str) -> bool:
    """True for an IPv4 or IPv6 address (brackets allowed) or a host name, without port."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if bare != text or len(text) > 253 or _HOST_NAME.fullmatch(text) is None:
            return False
        # All digits and dots is meant as an IPv4 address, and this one is not valid.
        return not all(label.isdigit() for label in text.rstrip(".").split("."))
    return True


def _check_port(key: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(key, f"must be a port number from 1 to 65535, got {value}")


def _check_semantics(values: dict[str, Any]) -> None:
    address = str(values["ip_address"]).strip()
    if not is_host(address):
        raise ConfigError(
            "ip_address",
            f"not an IP address or host name: {shown(values['ip_address'])} "
            "(the port goes in 'port', without a scheme)",
        )
    for key, value in values.items():
        # JSON Schema takes NaN and infinities for numbers; no setting means them.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}")
    _check_port("port", values["port"])
    ntp_in_use = bool(values["ntp_server_1_ip_addr"])
    for address_key, port_key in _NTP_SERVERS:
        if not (ntp_in_use and values[address_key]):
            continue
        # The meter resolves the name itself, as with EVerest's C++ module.
        address = values[address_key]
        if not is_host(address):
            raise ConfigError(address_key, f"not an IP address or host name: {shown(address)}")
        _check_port(port_key, values[port_key])
    _check_reply_topics(values["api_reply_topics"])
    _check_timezone(values["meter_timezone"])
    _check_dst(values["meter_dst"])
    if values["meter_tls_certificate"].strip():
        # Imported here: the TLS module pulls in cryptography, needed only with HTTPS.
        from lem_dcbm.meter.tls import normalize_pem

        normalize_pem(values["meter_tls_certificate"])


def reply_prefixes(text: str) -> tuple[str, ...]:
    """The topic prefixes in an ``api_reply_topics`` value (blanks or commas between)."""
    return tuple(part for part in re.split(r"[\s,]+", text) if part)


def _check_reply_topics(text: str) -> None:
    for prefix in reply_prefixes(text):
        if prefix == "#":
            continue
        if "+" in prefix or "#" in prefix or "\x00" in prefix:
            raise ConfigError(
                "api_reply_topics",
                f"{shown(prefix)} is not a topic prefix (no + or #; # alone allows any topic)",
            )


def _check_timezone(text: str) -> None:
    match = _TIMEZONE.match(text)
    problem = (
        f"expected +HH:MM or -HH:MM from -11:00 to +14:00, minutes 00/15/30/45; got {shown(text)}"
    )
    if not match:
        raise ConfigError("meter_timezone", problem)
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    offset = (hours * 60 + minutes) * (-1 if sign == "-" else 1)
    if minutes not in (0, 15, 30, 45) or not -11 * 60 <= offset <= 14 * 60:
        raise ConfigError("meter_timezone", problem)


def _check_dst(text: str) -> None:
    try:
        value = loads_bounded(text)
    except ValueError as exc:
        raise ConfigError("meter_dst", f"not valid JSON: {cut(str(exc))}") from exc
    if not isinstance(value, dict):
        raise ConfigError("meter_dst", "must be a JSON object")


# --- changes at run time (2026 framework) ------------------------------------------


def runtime_keys(manifest: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The keys declared ``mutability: ReadWrite``: changed while running, without a restart."""
    manifest = manifest if manifest is not None else _packaged_manifest()
    return frozenset(
        key for key, entry in manifest["config"].items() if entry.get("mutability") == "ReadWrite"
    )


def config_with_change(
    config: ModuleConfig, key: str, value: object, manifest: Mapping[str, Any] | None = None
) -> ModuleConfig:
    """``config`` with ``key`` set to ``value``, validated exactly as at start-up.

    ``value`` is the manager's text of the new value (``"3"``, ``"true"``); raises
    ``ConfigError(key, problem)`` for an unknown key or a value start-up would refuse.
    """
    manifest = manifest if manifest is not None else _packaged_manifest()
    entry = manifest["config"].get(key)
    if entry is None:
        raise ConfigError(key, unknown_key_problem(key, manifest["config"]))
    values = asdict(config)
    values[key] = _from_text(key, value, entry["type"])
    return config_from_mapping(values, manifest)


# --- sources: EVerest config file, manager parameters ------------------------------


class _Yaml12Loader(yaml.SafeLoader):
    """Plain scalars read by YAML 1.2's core schema, as EVerest reads its config files.

    YAML 1.1 (PyYAML's default) would turn ``+14:00`` into 840, ``no`` into False and
    ``2026-11-22`` into a date.
    """


_YAML11_ONLY = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+|0o[0-7]+)$"),
    list("-+0123456789"),
)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> object:
    loader = _Yaml12Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _is_our_module(name: object) -> bool:
    if not isinstance(name, str):
        return False
    folded = name.replace("-", "").replace("_", "").lower()
    return any(folded == known.replace("-", "").replace("_", "").lower() for known in MODULE_NAMES)


def load_everest_config_file(path: Path, module_id: str | None) -> tuple[str, ModuleConfig]:
    """Read an EVerest config file; return the module id and its validated config.

    Without ``module_id`` the single active module whose ``module`` is this module's
    name is used.
    """
    try:
        document = _load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), _yaml_problem(exc), kind="config file") from exc
    modules = document.get("active_modules") if isinstance(document, dict) else None
    if not isinstance(modules, dict) or not modules:
        raise ConfigError("active_modules", f"{path} has no 'active_modules' mapping")
    ours = [
        str(mid)
        for mid, entry in modules.items()
        if isinstance(entry, dict) and _is_our_module(entry.get("module"))
    ]
    if module_id is None:
        if len(ours) != 1:
            raise ConfigError(
                "active_modules",
                f"expected exactly one module '{MODULE_NAMES[0]}' in {path}, "
                f"found {_listing(ours)}; name one with --module-id",
            )
        module_id = ours[0]
    entry = modules.get(module_id)
    if not isinstance(entry, dict):
        raise ConfigError(
            "--module-id",
            f"no module '{module_id}' in {path}; this module's ids there: {_listing(ours)}",
        )
    if module_id in ours:
        _check_entry_level(entry, module_id)
    try:
        return module_id, config_from_mapping(_entry_values(entry, module_id))
    except ConfigError as err:
        if module_id in ours:
            raise
        # A folder of another name may hold this module, so an entry of another kind is
        # refused only when its config is not ours: then that, not a key, is the problem.
        raise ConfigError(
            "--module-id",
            f"'{module_id}' in {path} is a module of kind {entry.get('module')!r}, not "
            f"lem-dcbm; this module's ids there: {_listing(ours)}",
        ) from err


def _check_entry_level(entry: Mapping[str, object], module_id: str) -> None:
    """A config key written beside ``config_module`` instead of under it (indentation)."""
    config_keys = _packaged_manifest()["config"]
    under = entry.get("config_module")
    for key in entry:
        if key in config_keys and not (isinstance(under, Mapping) and key in under):
            raise ConfigError(
                str(key),
                f"is beside config_module in '{module_id}', not under it: indent it one "
                "level deeper, like the other keys of config_module",
            )


def _listing(module_ids: list[str]) -> str:
    return ", ".join(module_ids) or "none"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where (1-based line and column) and what."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {' '.join(str(problem).split())}"


def _entry_values(entry: Mapping[str, object], module_id: str) -> dict[str, object]:
    values: dict[str, object] = {}
    module_values = entry.get("config_module") or {}
    if not isinstance(module_values, dict):
        raise ConfigError("config_module", f"of '{module_id}' is not a mapping")
    values.update(module_values)
    implementations = entry.get("config_implementation") or {}
    if not isinstance(implementations, dict):
        raise ConfigError("config_implementation", f"of '{module_id}' is not a mapping")
    main = implementations.get("main") or {}
    if not isinstance(main, dict):
        raise ConfigError("config_implementation", f"'main' of '{module_id}' is not a mapping")
    for key, value in main.items():
        if key in values and values[key] != value:
            raise ConfigError(
                str(key), "set differently in config_module and config_implementation.main"
            )
        values[key] = value
    return values


def config_from_manager_parameters(params: object) -> ModuleConfig:
    """Build the config from the manager's ``configuration_parameters["!module"]`` list."""
    values: dict[str, Any] = {}
    if not isinstance(params, list):
        raise ConfigError("configuration_parameters", "'!module' is not a list")
    for param in params:
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise ConfigError("configuration_parameters", f"entry without a name: {param!r}")
        if "value" not in param:
            raise ConfigError(param["name"], "the manager sent no value")
        datatype = (param.get("characteristics") or {}).get("datatype")
        values[param["name"]] = _from_text(param["name"], param["value"], datatype)
    return config_from_mapping(values)


#: The text of an integer as JSON writes it, ASCII digits only: ``int()`` would also take
#: " 3", "+3", "3\n", "1_0" and other scripts' digits.
_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)", re.ASCII)


def _from_text(key: str, value: object, datatype: object) -> object:
    """Values arrive typed; a string for a non-string datatype is converted as the manager does.

    Only the canonical text of an integer is read as one, so the value a change stores is
    the value it shows.
    """
    if not isinstance(value, str) or datatype in (None, "string"):
        return value
    try:
        if datatype == "integer":
            if not _INTEGER_TEXT.fullmatch(value):
                raise ValueError(value)
            return int(value)
        if datatype in ("number", "decimal"):
            return float(value)
        if datatype in ("boolean", "bool"):
            # The manager itself reads only true and false (any case); 1 and 0 are kept.
            word = value.strip().lower()
            if word not in ("true", "1", "false", "0"):
                raise ValueError(word)
            return word in ("true", "1")
    except ValueError as exc:
        raise ConfigError(key, f"cannot read {shown(value)} as {datatype}") from exc
    return value


# --- the broker -------------------------------------------------------------------


DEFAULT_PREFIX = "everest/"


def normalize_prefix(prefix: str | None) -> str:
    """Return ``prefix`` ending in exactly one ``/`` (``everest`` -> ``everest/``)."""
    text = (prefix or DEFAULT_PREFIX).strip()
    return text.rstrip("/") + "/"


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """Where the MQTT broker is and which EVerest topic prefix to use."""

    #: Broker host name (TCP).
    host: str = "localhost"
    #: Broker port (TCP).
    port: int = 1883
    #: Unix socket of the broker; when set it is used instead of host and port.
    socket_path: str | None = None
    #: EVerest topic prefix, always ending in ``/``.
    prefix: str = "everest/"
    #: EVerest's prefix for topics outside the module protocol (``EV_MQTT_EXTERNAL_PREFIX``);
    #: empty or ending in ``/``.
    external_prefix: str = ""
    #: User name for the broker; None connects without credentials.
    username: str | None = None
    #: The user's password; kept out of ``repr`` so it never reaches a log line.
    password: str | None = field(default=None, repr=False)
    #: CA file (PEM) that signed the broker's certificate; when set the link uses TLS.
    tls_ca_file: str | None = None
    #: Client certificate (PEM) for brokers that require one; may hold the key as well.
    tls_cert_file: str | None = None
    #: Unencrypted private key (PEM) of the client certificate.
    tls_key_file: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalize_prefix(self.prefix))
        if self.external_prefix and not self.external_prefix.endswith("/"):
            object.__setattr__(self, "external_prefix", self.external_prefix + "/")

    def describe(self) -> str:
        """``unix:/path``, ``host:port`` or ``host:port (TLS)``, for log lines and errors."""
        if self.socket_path:
            return f"unix:{self.socket_path}"
        return f"{self.host}:{self.port}{' (TLS)' if self.tls_ca_file else ''}"

    def describe_user(self) -> str:
        """Who connects, for log lines: the user name, never the password."""
        return f"user {self.username!r}" if self.username else "no user name"


def broker_settings(
    *,
    host: str | None = None,
    port: int | None = None,
    socket_path: str | None = None,
    prefix: str | None = None,
    credentials: BrokerCredentials | None = None,
    env: Mapping[str, str] | None = None,
) -> BrokerSettings:
    """Broker settings from flags, else ``EV_MQTT_*`` environment variables, else defaults.

    A socket path from the environment is ignored when a host or port flag is given.
    Credentials and TLS files are read and checked here, so a bad one stops the start.
    """
    env = os.environ if env is None else env
    if socket_path is None and host is None and port is None:
        socket_path = env.get("EV_MQTT_BROKER_SOCKET_PATH") or None
    chosen_port: int = 1883
    if port is not None:
        chosen_port = port
        port_key = "--broker-port"
    elif env.get("EV_MQTT_BROKER_PORT"):
        port_key = "EV_MQTT_BROKER_PORT"
        try:
            chosen_port = int(env["EV_MQTT_BROKER_PORT"])
        except ValueError:
            raise ConfigError(port_key, f"not a port number: {env[port_key]!r}") from None
    else:
        port_key = "--broker-port"
    if not 1 <= chosen_port <= 65535:
        raise ConfigError(port_key, f"must be a port number from 1 to 65535, got {chosen_port}")
    return BrokerSettings(
        host=host or env.get("EV_MQTT_BROKER_HOST") or "localhost",
        port=chosen_port,
        socket_path=socket_path,
        prefix=prefix or env.get("EV_MQTT_EVEREST_PREFIX") or "everest/",
        external_prefix=env.get("EV_MQTT_EXTERNAL_PREFIX", ""),
        **_broker_security(credentials or BrokerCredentials(), env, tcp=not socket_path),
    )


@dataclass(frozen=True, kw_only=True)
class BrokerCredentials:
    """The security flags of a command line; each falls back to its ``EV_MQTT_*`` variable."""

    #: ``--broker-username`` (``EV_MQTT_USERNAME``).
    username: str | None = None
    #: ``--broker-password-file`` (``EV_MQTT_PASSWORD_FILE``, else ``EV_MQTT_PASSWORD``).
    password_file: str | None = None
    #: ``--broker-tls-ca`` (``EV_MQTT_TLS_CA_FILE``).
    tls_ca_file: str | None = None
    #: ``--broker-tls-cert`` (``EV_MQTT_TLS_CERT_FILE``).
    tls_cert_file: str | None = None
    #: ``--broker-tls-key`` (``EV_MQTT_TLS_KEY_FILE``).
    tls_key_file: str | None = None


def _broker_security(
    flags: BrokerCredentials, env: Mapping[str, str], *, tcp: bool
) -> dict[str, str | None]:
    """User, password and TLS files from flags or environment, checked for use."""
    username = flags.username or env.get("EV_MQTT_USERNAME") or None
    password_file = flags.password_file or env.get("EV_MQTT_PASSWORD_FILE") or None
    password_key = "--broker-password-file" if flags.password_file else "EV_MQTT_PASSWORD_FILE"
    if password_file:
        password: str | None = read_password_file(password_key, password_file)
    else:
        password_key, password = "EV_MQTT_PASSWORD", env.get("EV_MQTT_PASSWORD") or None
    if password and not username:
        raise ConfigError(password_key, "a password needs a user name (EV_MQTT_USERNAME)")
    ca_file = flags.tls_ca_file or env.get("EV_MQTT_TLS_CA_FILE") or None
    cert_file = flags.tls_cert_file or env.get("EV_MQTT_TLS_CERT_FILE") or None
    key_file = flags.tls_key_file or env.get("EV_MQTT_TLS_KEY_FILE") or None
    # An error names where the file came from: the option given, else the variable.
    names = (
        "--broker-tls-ca" if flags.tls_ca_file else "EV_MQTT_TLS_CA_FILE",
        "--broker-tls-cert" if flags.tls_cert_file else "EV_MQTT_TLS_CERT_FILE",
        "--broker-tls-key" if flags.tls_key_file else "EV_MQTT_TLS_KEY_FILE",
    )
    if (cert_file or key_file) and not ca_file:
        raise ConfigError(names[0], "a client certificate needs the broker's CA")
    if key_file and not cert_file:
        raise ConfigError(names[2], "a key needs its certificate")
    if ca_file and not tcp:
        raise ConfigError(names[0], "TLS is for a TCP broker, not a unix socket")
    if ca_file:
        broker_ssl_context(ca_file, cert_file, key_file, names=names)  # refuses bad files now
    return {
        "username": username,
        "password": password,
        "tls_ca_file": ca_file,
        "tls_cert_file": cert_file,
        "tls_key_file": key_file,
    }
