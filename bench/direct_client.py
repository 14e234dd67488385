"""The meter requests of one start and one stop, sent by a plain keep-alive HTTP client.

This is the baseline of ``command_latency.py``: the same requests in the same order as
the module makes for ``start_transaction`` and ``stop_transaction``, with nothing
around them (no MQTT, no validation, no journal, no record verification).
"""

from __future__ import annotations

import json
import ssl
import time
from collections import Counter
from typing import Any

import requests
from harness import BenchError, Simulator
from requests.adapters import HTTPAdapter

#: (method, path) of each request, in order; learned from the simulator's request counts.
START_SEQUENCE: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/status"),
    ("PUT", "/v1/settings"),
    ("PUT", "/v1/settings"),
    ("PUT", "/v1/settings"),
    ("POST", "/v2/legal"),
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


class _PinnedAdapter(HTTPAdapter):
    """Keep-alive connections that trust only the simulator's certificate."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self._context
        pool_kwargs["assert_hostname"] = False
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # Keep trust with the pinned context instead of requests' CA bundle.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


class DirectClient:
    """A ``requests.Session`` against one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self._base = sim.base_url
        self._session = requests.Session()
        if sim.tls:
            self._session.mount("https://", _PinnedAdapter(sim.ssl_context()))

    def close(self) -> None:
        """Close the connections."""
        self._session.close()

    def _send(
        self, method: str, path: str, expect: int, body: Any = None, transaction_id: str = ""
    ) -> Any:
        params = {"transactionId": transaction_id} if transaction_id else None
        answer = self._session.request(
            method, self._base + path, json=body, params=params, timeout=10
        )
        if answer.status_code != expect:
            raise BenchError(f"{method} {path}: HTTP {answer.status_code}: {answer.text[:200]}")
        text = answer.content.decode()
        return text if text.startswith("OCMF|") else json.loads(text)

    def start(self, transaction_id: str) -> None:
        """Status, clock, timezone and DST, POST /legal, the begin record."""
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
        self._send("GET", "/v2/ocmf", 200, transaction_id=transaction_id)

    def stop(self, transaction_id: str) -> None:
        """Status, GET /legal, PUT /legal (running false), the final record."""
        self._send("GET", "/v1/status", 200)
        self._send("GET", "/v2/legal", 200)
        self._send("PUT", "/v2/legal", 200, {"running": False}, transaction_id)
        self._send("GET", "/v2/ocmf", 200, transaction_id=transaction_id)
