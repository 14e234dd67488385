"""Second looks at a meter that failed a request: which scheme it speaks, which certificate.

A meter with TLS switched on resets plain HTTP connections; one with TLS off answers a
TLS handshake with plain text; a meter whose certificate changed (a replaced meter, a
factory reset) fails the pinned handshake. All three show as bare socket or SSL errors.
These probes, made once after a request failed, tell them apart so that the error can
say what to change. Each probe is one short connection that sends no
meter request, and any failure of a probe means "don't know".
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any

from lem_dcbm.meter.transport import DEFAULT_SOCKET_OPTIONS, open_socket

#: The longest a probe waits: it only adds a hint to an error already known.
MAX_PROBE_S = 3.0


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """Where to probe, with the transport's timeout and socket options (interface binding)."""

    host: str
    port: int
    timeout_s: float
    socket_options: tuple[tuple[int, int, Any], ...] = DEFAULT_SOCKET_OPTIONS

    def open(self) -> socket.socket:
        """A fresh TCP connection, waiting at most ``MAX_PROBE_S``."""
        return open_socket(
            self.host, self.port, min(self.timeout_s, MAX_PROBE_S), self.socket_options
        )


def reading_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: to read one, never to trust it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # The meter's 1024-bit key needs level 1, as in the pinned context.
    context.set_ciphers("DEFAULT:@SECLEVEL=1")
    return context


def presented_certificate(target: ProbeTarget) -> bytes | None:
    """The DER certificate the server at ``target`` presents, None without a handshake."""
    try:
        with (
            target.open() as raw,
            reading_context().wrap_socket(raw, server_hostname=None) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None


def speaks_plain_http(target: ProbeTarget) -> bool:
    """True when ``target`` answers a plain ``OPTIONS *`` with an HTTP status line."""
    # About the server, not a resource: every HTTP/1.1 server answers it (200, 405 or 501)
    # and no meter endpoint is touched.
    request = f"OPTIONS * HTTP/1.1\r\nHost: {target.host}\r\nConnection: close\r\n\r\n"
    try:
        with target.open() as raw:
            raw.sendall(request.encode())
            return raw.recv(5) == b"HTTP/"
    except OSError:
        return False
