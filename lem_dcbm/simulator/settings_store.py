"""The meter's settings object: defaults, validation of partial writes, merging."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, TypeGuard

from lem_dcbm.simulator.meter_time import check_transition, parse_tz, parse_utc
from lem_dcbm.simulator.refusals import FieldError

#: Cable loss compensation table: ``cableId`` -> (name, resistance in milliohm).
CABLE_TABLE: tuple[tuple[str, int], ...] = (
    ("No_Comp", 0),
    ("2mR_Comp", 2),
    ("4mR_Comp", 4),
    ("6mR_Comp", 6),
    ("8mR_Comp", 8),
    ("10mR_Comp", 10),
    ("12mR_Comp", 12),
    ("14mR_Comp", 14),
)

_DST_DEFAULT: dict[str, Any] = {
    "activated": False,
    "offset": 60,
    "start": {"order": "last", "day": "sunday", "month": "march", "hour": "T01:00Z"},
    "end": {"order": "last", "day": "sunday", "month": "october", "hour": "T01:00Z"},
}


def default_settings(tls_on: bool) -> dict[str, Any]:
    """The settings of a meter fresh from the factory (TLS as given)."""
    return {
        "time": {"tz": "+00:00", "dst": copy.deepcopy(_DST_DEFAULT)},
        "ntp": {
            "servers": [{"ipAddress": "", "port": 123}, {"ipAddress": "", "port": 123}],
            "syncPeriod": 120,
            "ntpActivated": False,
        },
        "http": {"tls_on": tls_on},
        "ocmfId": {"IT": 0},
        "cableConf": [
            {"cableSpId": ident, "cableSpName": name, "cableSpRes": res}
            for ident, (name, res) in enumerate(CABLE_TABLE)
        ],
    }


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: object, field: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not value:
        raise FieldError(field, f"{field} must be a non-empty object")
    return value


def _only(section: Mapping[str, object], allowed: tuple[str, ...], path: str) -> None:
    for key in section:
        if key not in allowed:
            raise FieldError(f"{path}.{key}", f"unknown setting {path}.{key}")


def _check_time(section: Mapping[str, object]) -> None:
    _only(section, ("utc", "tz", "dst"), "time")
    if "utc" in section:
        try:
            parse_utc(section["utc"])
        except (TypeError, ValueError) as exc:
            raise FieldError("time.utc", f"time.utc is invalid: {exc}") from exc
    if "tz" in section:
        try:
            parse_tz(section["tz"])
        except ValueError as exc:
            raise FieldError("time.tz", f"time.tz is invalid: {exc}") from exc
    if "dst" in section:
        dst = _object(section["dst"], "time.dst")
        _only(dst, ("activated", "offset", "start", "end"), "time.dst")
        if "activated" in dst and not isinstance(dst["activated"], bool):
            raise FieldError("time.dst.activated", "time.dst.activated must be a boolean")
        if "offset" in dst and not (_is_int(dst["offset"]) and 0 <= dst["offset"] <= 120):
            raise FieldError("time.dst.offset", "time.dst.offset must be 0..120 minutes")
        for edge in ("start", "end"):
            if edge in dst:
                try:
                    check_transition(dst[edge])
                except ValueError as exc:
                    raise FieldError(f"time.dst.{edge}", f"time.dst.{edge}: {exc}") from exc


def _check_ntp(section: Mapping[str, object]) -> None:
    _only(section, ("servers", "syncPeriod", "ntpActivated"), "ntp")
    if "servers" in section:
        servers = section["servers"]
        if not isinstance(servers, list) or len(servers) > 2:
            raise FieldError("ntp.servers", "ntp.servers must be a list of at most 2 servers")
        for server in servers:
            if (
                not isinstance(server, Mapping)
                or not isinstance(server.get("ipAddress"), str)
                or not _is_int(server.get("port"))
                or not 0 < server["port"] < 65536
            ):
                raise FieldError("ntp.servers", "each server needs ipAddress (text) and port")
    period = section.get("syncPeriod", 1)
    if not (_is_int(period) and period > 0):
        raise FieldError("ntp.syncPeriod", "ntp.syncPeriod must be a positive integer")
    if "ntpActivated" in section and not isinstance(section["ntpActivated"], bool):
        raise FieldError("ntp.ntpActivated", "ntp.ntpActivated must be a boolean")


def check_write(body: object) -> Mapping[str, object]:
    """Validate a partial settings object; raise ``FieldError`` naming the bad field."""
    if not isinstance(body, Mapping) or not body:
        raise FieldError("body", "the body must be a non-empty JSON object")
    for key, value in body.items():
        if key == "time":
            _check_time(_object(value, "time"))
        elif key == "ntp":
            _check_ntp(_object(value, "ntp"))
        elif key == "http":
            section = _object(value, "http")
            _only(section, ("tls_on",), "http")
            if not isinstance(section["tls_on"], bool):
                raise FieldError("http.tls_on", "http.tls_on must be a boolean")
        elif key == "ocmfId":
            section = _object(value, "ocmfId")
            _only(section, ("IT",), "ocmfId")
            if not (_is_int(section["IT"]) and 0 <= section["IT"] <= 17):
                raise FieldError("ocmfId.IT", "ocmfId.IT must be an integer 0..17")
        elif key == "cableConf":
            raise FieldError("cableConf", "cableConf is read-only in this simulator")
        else:
            raise FieldError(key, f"unknown setting {key}")
    return body


def merge(settings: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with the validated partial ``body`` applied (``time.utc`` is an action)."""
    merged = copy.deepcopy(dict(settings))
    for key, value in body.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            fresh = {k: v for k, v in value.items() if not (key == "time" and k == "utc")}
            merged[key] = merge(merged[key], fresh)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
