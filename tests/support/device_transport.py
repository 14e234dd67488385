"""The simulated meter behind the real client, in process: one clock drives both sides."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from lem_dcbm.simulator.device import SimulatedMeter
from lem_dcbm.simulator.routes import meter_response


class DeviceTransport:
    """A ``Transport`` that hands each request to ``SimulatedMeter`` instead of a socket."""

    def __init__(self, device: SimulatedMeter) -> None:
        self.device = device

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        """Answer as the meter would over HTTP."""
        raw = json.dumps(json_body).encode() if json_body is not None else b""
        split = urlsplit(path)
        query = "&".join(q for q in (split.query, urlencode(dict(params or {}))) if q)
        status, payload, _ = meter_response(self.device, method, split.path, query, raw)
        return status, payload.decode("utf-8")

    def close(self) -> None:
        """Nothing to close."""
