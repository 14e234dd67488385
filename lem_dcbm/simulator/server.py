"""The simulated meter over real sockets: HTTP/1.1 keep-alive, optional TLS, a control API.

Meter paths (``/v1/...``, ``/v2/...``) go to ``SimulatedMeter``; ``/_sim/...`` is the
simulator's own control API, never counted as meter requests or connections.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import struct
import sys
import tempfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lem_dcbm.clock import Clock
from lem_dcbm.json_types import JsonObject
from lem_dcbm.simulator.certs import CertificatePair
from lem_dcbm.simulator.connections import Connection, ConnectionRegistry
from lem_dcbm.simulator.device import SimulatedMeter
from lem_dcbm.simulator.faults import FaultBoard, Faults, parse_faults
from lem_dcbm.simulator.http_body import BodyError, read_body
from lem_dcbm.simulator.ocmf_signer import tamper_record
from lem_dcbm.simulator.refusals import FieldError, NotFound, Refusal
from lem_dcbm.simulator.routes import JSON, json_body, meter_response, ocmf_of_response

_LOGGER = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
#: ``drip_ms``: bytes of the body sent between two pauses.
DRIP_BYTES = 4
#: ``truncate_body``: bytes promised in ``Content-Length`` and never sent.
TRUNCATED_BYTES = 100
_OCMF_INDEX = re.compile(r"^/v[12]/ocmf/(-?\d+)$")


def server_tls_context(pair: CertificatePair) -> ssl.SSLContext:
    """A server context for the 1024-bit key: TLS >= 1.2 at OpenSSL security level 1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Level 2 (the default) refuses to load a 1024-bit RSA key at all.
    context.set_ciphers("DEFAULT:@SECLEVEL=1")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        context.load_cert_chain(cert, key)
    return context


class MeterServer(ThreadingHTTPServer):
    """A threading HTTP(S) server in front of one ``SimulatedMeter``."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        device: SimulatedMeter,
        clock: Clock,
        tls_context: ssl.SSLContext | None = None,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.device = device
        self.clock = clock
        self.tls_context = tls_context
        self.idle_timeout_s = idle_timeout_s
        self.faults = FaultBoard(clock.monotonic)
        self.connections = ConnectionRegistry()
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6  # an IPv6 host such as ::1
        super().__init__(address, MeterRequestHandler)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])

    @property
    def scheme(self) -> str:
        """``https`` while the meter serves TLS, else ``http``."""
        return "https" if self.device.tls_active else "http"

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Per connection, in its own thread: TLS handshake if on, then serve requests."""
        tls = self.device.tls_active
        conn = self.connections.add(request, tls)
        try:
            # Headers and body go out in separate writes; without this, Nagle's algorithm
            # and the client's delayed ACK add 40 ms to every answer.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                if self.tls_context is None:
                    raise RuntimeError("TLS is on but the simulator has no certificate")
                request.settimeout(HANDSHAKE_TIMEOUT_S)
                try:
                    wrapped = self.tls_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self.connections.handshake_failed()
                    _LOGGER.info("TLS handshake with %s failed: %s", client_address, exc)
                    return
                self.connections.rewrap(conn, wrapped)
                request = wrapped
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.connections.remove(conn)
            self.shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a failed connection quietly; clients vanish all the time."""
        _LOGGER.debug("connection from %s ended: %r", client_address, sys.exc_info()[1])

    def note_request(self, conn: Connection | None, key: str) -> None:
        """Count a meter request and its connection."""
        with self._counts_lock:
            self._counts[key] += 1
        if conn is not None:
            self.connections.count(conn)

    def request_counts(self) -> dict[str, int]:
        """Meter requests so far, per ``"METHOD /path"``."""
        with self._counts_lock:
            return dict(self._counts)

    def state(self) -> JsonObject:
        """The device's state plus request, connection and fault bookkeeping."""
        return {
            **self.device.state(),
            "requests": self.request_counts(),
            "connections": self.connections.stats(),
            "tls_handshake_failures": self.connections.tls_handshake_failures,
            "faults": self.faults.describe(),
            "faults_applied": self.faults.applied,
        }


def endpoint_key(method: str, path: str) -> str:
    """The request-count key: ``"GET /v1/ocmf/{index}"`` for any stored index."""
    if _OCMF_INDEX.match(path):
        path = path.rsplit("/", 1)[0] + "/{index}"
    return f"{method} {path[:80]}"


class MeterRequestHandler(BaseHTTPRequestHandler):
    """Maps one HTTP request to the meter or to the control API."""

    protocol_version = "HTTP/1.1"
    server_version = "LEM-DCBM-simulator"
    server: MeterServer

    def setup(self) -> None:
        """Apply the idle timeout: a keep-alive connection silent this long is closed."""
        super().setup()
        self.connection.settimeout(self.server.idle_timeout_s)
        self._conn = self.server.connections.find(self.request)

    def handle_one_request(self) -> None:
        """Mark the connection idle while it waits for the next request line."""
        if self._conn is not None:
            self._conn.idle = True
        super().handle_one_request()

    def parse_request(self) -> bool:
        """A request line arrived: the connection is busy."""
        if self._conn is not None:
            self._conn.idle = False
        return super().parse_request()

    def log_message(self, format: str, *args: object) -> None:
        """Route the access log to logging at debug level."""
        message = format % args
        _LOGGER.debug("%s %s", self.address_string(), message)

    def do_GET(self) -> None:
        """Handle GET."""
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        """Handle HEAD like GET without a body."""
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        """Handle POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._dispatch("DELETE")

    # -- plumbing ---------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a malformed one (and closing)."""
        try:
            return read_body(self.headers, self.rfile)
        except BodyError as exc:
            # Where this body ends is unknown: nothing more can be read from the stream.
            self.close_connection = True
            _LOGGER.info("bad request body from %s: %s", self.address_string(), exc.message)
            self._send_json(exc.status, {"error": exc.message, "field": "body"})
            return None

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        head: bool = False,
        faults: Faults | None = None,
    ) -> None:
        if isinstance(self.connection, ssl.SSLSocket) != self.server.device.tls_active:
            # The meter switched scheme: this connection finishes its request and closes.
            self.close_connection = True
        truncate = faults is not None and faults.truncate_body
        if truncate:
            self.close_connection = True  # the promised rest never comes
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload) + (TRUNCATED_BYTES if truncate else 0)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        drip_s = faults.drip_ms / 1000.0 if faults is not None else 0.0
        if not drip_s:
            self.wfile.write(payload)
            return
        for start in range(0, len(payload), DRIP_BYTES):
            self.wfile.write(payload[start : start + DRIP_BYTES])
            self.wfile.flush()
            self.server.clock.sleep(drip_s)

    def _send_json(self, status: int, body: object, head: bool = False) -> None:
        self._send(status, json.dumps(body).encode("utf-8"), JSON, head)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        if split.path.startswith("/_sim/"):
            raw = self._read_body()
            if raw is None:
                return
            try:
                self._send_json(200, self._control(method, split.path, json_body(raw)))
            except Refusal as refusal:
                self._send_json(refusal.status, refusal.body)
            return
        self.server.note_request(self._conn, endpoint_key(method, split.path))
        faults = self.server.faults.take(method, self.path)
        if faults is not None and faults.latency_ms:
            self.server.clock.sleep(faults.latency_ms / 1000.0)
        if faults is not None and faults.replaces_answer and not faults.after_processing:
            # The meter never sees the request; a reset leaves even its body unread.
            if faults.reset_connection or self._read_body() is not None:
                self._inject(faults)
            return
        raw = self._read_body()
        if raw is None:
            return
        device = self.server.device
        tls_before = device.tls_active
        if faults is not None and faults.ocmf_of is not None:
            status, payload, content_type = ocmf_of_response(device, faults.ocmf_of)
        else:
            status, payload, content_type = meter_response(
                device, method, split.path, split.query, raw
            )
        if faults is not None and faults.replaces_answer:
            self._inject(faults)
        else:
            if faults is not None and faults.tamper_ocmf and payload.startswith(b"OCMF|"):
                payload = tamper_record(payload.decode("utf-8")).encode("utf-8")
            self._send(status, payload, content_type, head=method == "HEAD", faults=faults)
        if device.tls_active != tls_before:
            self._switched_scheme(device.tls_active)

    def _switched_scheme(self, tls: bool) -> None:
        """``http.tls_on`` changed: new connections get the new scheme, old idle ones go."""
        dropped = self.server.connections.close_idle(other_than_tls=tls)
        _LOGGER.info(
            "now serving %s; dropped %d idle connections", "HTTPS" if tls else "HTTP", dropped
        )

    def _inject(self, faults: Faults) -> None:
        if faults.reset_connection:
            # Linger 0: close with a TCP reset and no answer at all.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            socket.socket.close(self.connection)
        elif faults.http_status is not None:
            status = faults.http_status
            self._send_json(status, {"error": f"simulated fault: HTTP {status}"})
        else:
            self._send(200, b'{"status": {"value": 17, "bits": ', JSON)

    # -- the control API --------------------------------------------------------------

    def _control(self, method: str, path: str, body: object) -> object:
        server, device = self.server, self.server.device
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_sim/state"):
            return server.state()
        if route == ("PUT", "/_sim/faults"):
            server.faults.set(parse_faults(body))
            return {"faults": server.faults.describe()}
        if route == ("DELETE", "/_sim/faults"):
            server.faults.clear()
            return {"faults": None}
        if route == ("POST", "/_sim/reboot"):
            device.reboot()
            # A power cycle drops every connection the meter had.
            dropped = server.connections.close_idle()
            return {"rebooted": True, "tls": device.tls_active, "dropped": dropped}
        if route == ("PUT", "/_sim/load"):
            device.set_load(**_numbers(body, ("power_kw", "voltage_v", "temperature_c")))
            return {"load": device.state()["load"]}
        if route == ("PUT", "/_sim/bits"):
            body = _object(body)
            device.set_bits(_object(body.get("status") or {}), _object(body.get("errors") or {}))
            return {"status": device.status()["status"], "errors": device.status()["errors"]}
        if route == ("PUT", "/_sim/clock"):
            offset = _numbers(body, ("offset_s",))
            device.set_clock_offset(offset.get("offset_s", 0.0))
            return {"offset_s": offset.get("offset_s", 0.0)}
        if route == ("POST", "/_sim/drop_connections"):
            return {"dropped": server.connections.close_idle()}
        raise NotFound(f"no control endpoint {method} {path}")


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise FieldError("body", "expected a JSON object")
    return body


def _numbers(body: object, names: tuple[str, ...]) -> dict[str, float]:
    body = _object(body)
    out: dict[str, float] = {}
    for key, value in body.items():
        if key not in names:
            raise FieldError(key, f"unknown field {key}; expected {', '.join(names)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(key, f"{key} must be a number")
        out[key] = float(value)
    return out
