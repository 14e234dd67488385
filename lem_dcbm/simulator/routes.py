"""Answering meter requests (``/v1/...``, ``/v2/...``) from a ``SimulatedMeter``.

Pure: no sockets. The HTTP server and in-process test transports share it, so both see
the same meter.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from lem_dcbm.simulator.device import SimulatedMeter
from lem_dcbm.simulator.refusals import FieldError, NotFound, Refusal

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

_V1_ONLY = {
    "status": ("GET",),
    "settings": ("GET", "PUT"),
    "logbook": ("GET",),
    "certificate": ("GET",),
}
_BOTH = {"livemeasure": ("GET",), "legal": ("GET", "POST", "PUT"), "ocmf": ("GET",)}


def json_body(raw: bytes) -> object:
    """The request body as JSON (None when empty); a bad body is a 400 naming it."""
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FieldError("body", "the body is not valid JSON") from exc


def meter_answer(
    device: SimulatedMeter, method: str, path: str, query: str, raw: bytes
) -> tuple[int, bytes, str]:
    """Status, body and content type of the meter's answer; raises ``Refusal`` for a 4xx."""
    parts = path.strip("/").split("/")
    api = device.config.api
    if len(parts) < 2 or parts[0] not in ("v1", "v2") or (parts[0] == "v2" and api == "v1"):
        raise NotFound(f"no such endpoint {path}")
    version, name = parts[0], parts[1]
    routes = dict(_BOTH) if version == "v2" else {**_BOTH, **_V1_ONLY}
    if name not in routes or (len(parts) > 2 and (name != "ocmf" or len(parts) > 3)):
        raise NotFound(f"no such endpoint {path}")
    verb = "GET" if method == "HEAD" else method
    if verb not in routes[name]:
        return 405, json.dumps({"error": f"{method} is not allowed on {path}"}).encode(), JSON
    params = {key: values[-1] for key, values in parse_qs(query).items()}
    if name == "ocmf":
        if len(parts) == 3:
            try:
                index = int(parts[2])
            except ValueError as exc:
                raise NotFound(f"no such endpoint {path}") from exc
            return 200, device.ocmf_at(index).encode("utf-8"), TEXT
        return 200, device.ocmf(params.get("transactionId")).encode("utf-8"), TEXT
    answer: Any
    status = 200
    if name == "status":
        answer = device.status()
    elif name == "livemeasure":
        answer = device.livemeasure()
    elif name == "logbook":
        answer = device.logbook()
    elif name == "certificate":
        answer = device.certificate()
    elif name == "settings":
        body = json_body(raw) if verb == "PUT" else None
        answer = device.put_settings(body) if verb == "PUT" else device.settings()
    elif verb == "POST":
        answer, status = device.start_transaction(json_body(raw), version), 201
    elif verb == "PUT":
        answer = device.stop_transaction(params.get("transactionId"), json_body(raw))
    else:
        answer = device.legal()
    return status, json.dumps(answer).encode("utf-8"), JSON


def meter_response(
    device: SimulatedMeter, method: str, path: str, query: str, raw: bytes
) -> tuple[int, bytes, str]:
    """Like ``meter_answer``, with a refusal turned into its 4xx JSON answer."""
    try:
        return meter_answer(device, method, path, query, raw)
    except Refusal as refusal:
        return refused(refusal)


def ocmf_of_response(device: SimulatedMeter, transaction_id: str) -> tuple[int, bytes, str]:
    """The last record of ``transaction_id`` as an OCMF answer (the ``ocmf_of`` fault); 404."""
    try:
        return 200, device.ocmf(transaction_id).encode("utf-8"), TEXT
    except Refusal as refusal:
        return refused(refusal)


def refused(refusal: Refusal) -> tuple[int, bytes, str]:
    """The 4xx JSON answer of ``refusal``."""
    return refusal.status, json.dumps(refusal.body).encode("utf-8"), JSON
