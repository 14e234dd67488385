"""The meter requests of one start and one stop, sent straight to the meter.

This is the baseline of ``command_latency.py``: the same requests in the same order as
the module makes for ``start_transaction`` and ``stop_transaction``, over the module's
own transport (keep-alive pool, pinned TLS) but with nothing around them (no MQTT, no
validation, no journal, no record verification).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from harness import BenchError, Simulator

from lem_dcbm.core.host_clock_trust import DEFAULT_MAX_SKEW_S, read_kernel_clock
from lem_dcbm.meter.transport import HttpTransport

_KERNEL = read_kernel_clock()
#: Without the kernel's word for the host clock the module reads the meter's clock (one
#: more status read) before it writes the host time, as with its default host_clock_trust.
JUDGED_BY_THE_METER = not (
    _KERNEL.synchronised
    and _KERNEL.max_error_s is not None
    and _KERNEL.max_error_s <= DEFAULT_MAX_SKEW_S
)

#: (method, path) of each request, in order; learned from the simulator's request counts.
START_SEQUENCE: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/status"),
    *((("GET", "/v1/status"),) if JUDGED_BY_THE_METER else ()),
    ("PUT", "/v1/settings"),
    ("PUT", "/v1/settings"),
    ("PUT", "/v1/settings"),
    ("POST", "/v2/legal"),
    ("GET", "/v1/status"),
    ("GET", "/v2/ocmf"),
)
STOP_SEQUENCE: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/status"),
    ("GET", "/v2/legal"),
    ("PUT", "/v2/legal"),
    ("GET", "/v2/ocmf"),
)

_DST = {
    "activated": False,
    "offset": 60,
    "start": {"order": "last", "day": "sunday", "month": "march", "hour": "T01:00Z"},
    "end": {"order": "last", "day": "sunday", "month": "october", "hour": "T01:00Z"},
}


def sequence_counts(sequence: tuple[tuple[str, str], ...]) -> Counter[str]:
    """The sequence as ``"METHOD /path"`` counts, the simulator's request-count keys."""
    return Counter(f"{method} {path}" for method, path in sequence)


class DirectClient:
    """The package's ``HttpTransport`` against one simulator."""

    def __init__(self, sim: Simulator) -> None:
        pem = sim.cert_path.read_text() if sim.tls else ""
        self._transport = HttpTransport(sim.base_url, timeout_s=10, tls_certificate_pem=pem)

    def close(self) -> None:
        """Close the connections."""
        self._transport.close()

    def _send(
        self, method: str, path: str, expect: int, body: Any = None, transaction_id: str = ""
    ) -> Any:
        params = {"transactionId": transaction_id} if transaction_id else None
        status, text = self._transport.request(method, path, json_body=body, params=params)
        if status != expect:
            raise BenchError(f"{method} {path}: HTTP {status}: {text[:200]}")
        return text if text.startswith("OCMF|") else json.loads(text)

    def start(self, transaction_id: str) -> None:
        """Status, (meter clock,) clock, timezone, DST, POST /legal, status, begin record."""
        self._send("GET", "/v1/status", 200)
        if JUDGED_BY_THE_METER:
            self._send("GET", "/v1/status", 200)
        utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._send("PUT", "/v1/settings", 200, {"time": {"utc": utc}})
        self._send("PUT", "/v1/settings", 200, {"time": {"tz": "+00:00"}})
        self._send("PUT", "/v1/settings", 200, {"time": {"dst": _DST}})
        body = {
            "evseId": "DE*LEM*E0001",
            "transactionId": transaction_id,
            "clientId": f"04A2B3C4D5E6F7,{transaction_id}"[:37],
            "tariffId": 0,
            "cableId": 0,
            "userData": "",
            "TT": "",
            "UV": "",
            "UD": "",
            "SC": 0,
        }
        self._send("POST", "/v2/legal", 201, body)
        self._send("GET", "/v1/status", 200)  # the ring slot the transaction took
        self._send("GET", "/v2/ocmf", 200, transaction_id=transaction_id)

    def stop(self, transaction_id: str) -> None:
        """Status, GET /legal, PUT /legal (running false), the final record."""
        self._send("GET", "/v1/status", 200)
        self._send("GET", "/v2/legal", 200)
        self._send("PUT", "/v2/legal", 200, {"running": False}, transaction_id)
        self._send("GET", "/v2/ocmf", 200, transaction_id=transaction_id)
