"""HTTP(S) to one meter over one persistent keep-alive connection.

The module speaks HTTP/1.1 (``http11``: one request string, one buffered reader per
connection, ``http.client``'s limits and exception types) on one connection it opens
(socket options, the pinned TLS context) and keeps. A pool, retries, redirects, content
decoding or proxies (what urllib3 or requests add) the meter needs none of; urllib3 cost
1.5 MB of a running module's peak RSS, and ``http.client``'s request and response
objects a tenth of its CPU at 1 Hz (bench/RESULTS.md). Every exception is translated
here into the package's tree (``raise ... from exc``):

- a failed TLS handshake -> ``MeterTlsError``;
- refused, reset or timed-out connections -> ``MeterConnectionError``;
- anything else -> ``MeterError``.

Every request ends within its timeout, however the meter answers: socket timeouts are
per operation, so a meter (or a middlebox) that dribbles an answer a byte at a time,
each byte within the timeout, would hold a request for ever. A deadline (``_Watchdog``)
shuts the request's socket down when the whole exchange, connect and TLS handshake
included, takes longer than the timeout.

Nothing is ever re-sent behind the caller's back, with one exception: a GET or PUT that
fails because the server closed a connection (reset, disconnect, broken pipe) before
answering is sent once more on a fresh connection. The meter drops idle keep-alive
connections at any time, and a dropped connection shows only when the next request
is about to go out (``_MeterConnection.exchange`` looks then), so the race between that
look and the send is real. A POST is never re-sent here: a connection can break after
the meter received and acted on the request, and starting a transaction twice is not
harmless, so the caller's retry policy decides.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from lem_dcbm.errors import (
    ConfigError,
    LemDcbmError,
    MeterBodyError,
    MeterConnectionError,
    MeterError,
    MeterTlsError,
)
from lem_dcbm.meter import http11
from lem_dcbm.meter.tls import certificate_der, pinned_ssl_context, sha256_fingerprint
from lem_dcbm.retry import RetryPolicy

_LOGGER = logging.getLogger(__name__)

_CHARSET = re.compile(r"charset=\"?([A-Za-z0-9._-]+)", re.IGNORECASE)

#: The largest answer read: the meter's largest (a settings object, a record) is a few KiB.
MAX_ANSWER_BYTES = 1024 * 1024
#: Methods that may be sent again after a stale-connection failure.
IDEMPOTENT_METHODS = frozenset({"GET", "PUT"})
#: Options of every connection to the meter: requests are small and go out at once.
DEFAULT_SOCKET_OPTIONS: tuple[tuple[int, int, int | bytes], ...] = (
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
)

# Signs that the peer closed a connection we believed open, rather than that the meter
# is unreachable; ssl.SSLEOFError is how a closed TLS connection shows up on a write.
_DISCONNECTS: tuple[type[BaseException], ...] = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
)


class _ConnectFailed(LemDcbmError, OSError):
    """No TCP connection to the meter (refused, unreachable, timed out); the cause says why."""


# Failures that no scheme or certificate mix-up causes: nothing to probe for.
_NOT_A_MIX_UP: tuple[type[BaseException], ...] = (
    _ConnectFailed,
    TimeoutError,
    ConnectionRefusedError,
)
# Failures to establish a connection at all: a fresh one will not do better.
_CONNECT_FAILURES: tuple[type[BaseException], ...] = (
    _ConnectFailed,
    ConnectionRefusedError,
    ssl.SSLCertVerificationError,
)


class _DeadlinePassed(LemDcbmError, TimeoutError):
    """The whole exchange took longer than the timeout; its socket was shut down."""


def _dropped(error: BaseException) -> bool:
    cause = error.__cause__
    return (
        isinstance(error, MeterConnectionError)
        and isinstance(cause, Exception)
        and not isinstance(cause, _DeadlinePassed)  # a slow meter, not a stale connection
        and is_stale_connection(cause)
    )


class _Deadline:
    """When one request must be over, and the connection whose socket to cut then."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.connection: object = None
        self.passed = False


class _Watchdog:
    """One thread for the process that shuts down the sockets of requests past deadline.

    A thread per request would cost more CPU than the request itself; this one sleeps
    until the earliest deadline and is woken early only by a request whose deadline is
    earlier still. With nothing to watch it sleeps the shortest timeout armed so far:
    a request armed meanwhile falls due later and need not wake it (at 1 Hz one look
    per timeout instead of a wake-up at nearly every request). After such a sleep in
    which nothing was armed it waits until a request wakes it.
    """

    #: While the connection has no socket yet (still connecting), how often to look again.
    RECHECK_S = 0.05

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: set[_Deadline] = set()
        self._thread: threading.Thread | None = None
        #: When the thread looks next on its own (infinity while it waits for work).
        self._wake_at = math.inf
        #: The shortest timeout armed so far, and whether anything was armed since the
        #: thread last found nothing to watch.
        self._shortest = math.inf
        self._armed = False

    def arm(self, seconds: float) -> _Deadline:
        """Watch a request that must be over in ``seconds``."""
        deadline = _Deadline(time.monotonic() + seconds)
        with self._cond:
            self._active.add(deadline)
            self._shortest = min(self._shortest, seconds)
            self._armed = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="meter-deadlines", daemon=True
                )
                self._thread.start()
            if deadline.at < self._wake_at:
                self._wake_at = deadline.at
                self._cond.notify()
        return deadline

    def watch(self, deadline: _Deadline, connection: object) -> None:
        """The connection the request uses (it may not be connected yet)."""
        with self._cond:
            deadline.connection = connection

    def end(self, deadline: _Deadline) -> bool:
        """The request is over; True when its deadline passed before it was."""
        with self._cond:
            self._active.discard(deadline)
            return deadline.passed

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                if not self._active:
                    if self._armed and self._shortest < math.inf:
                        self._armed = False
                        self._wake_at = now + self._shortest
                        self._cond.wait(self._shortest)
                    else:
                        self._wake_at = math.inf
                        self._cond.wait()
                    continue
                due = min(deadline.at for deadline in self._active)
                if due > now:
                    self._wake_at = due
                    self._cond.wait(due - now)
                    continue
                for deadline in [d for d in self._active if d.at <= now]:
                    deadline.passed = True
                    sock = getattr(deadline.connection, "sock", None)
                    if sock is None:
                        # Connecting (bounded by the connect timeout): cut once it has a socket.
                        deadline.at = now + self.RECHECK_S
                        continue
                    self._active.discard(deadline)
                    # Wakes the thread blocked on the socket; the connection is not reused.
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


def open_socket(
    host: str, port: int, timeout_s: float, options: tuple[tuple[int, int, Any], ...]
) -> socket.socket:
    """A TCP connection to ``host:port`` with ``options`` set before it connects.

    Raises ``_ConnectFailed`` from the last address's error when none accepts.
    """
    failure: OSError | None = None
    for family, kind, proto, _name, address in socket.getaddrinfo(
        host, port, 0, socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            for level, name, value in options:
                sock.setsockopt(level, name, value)
            sock.settimeout(timeout_s)
            sock.connect(address)
        except OSError as err:
            sock.close()
            failure = err
            continue
        return sock
    raise _ConnectFailed(str(failure or f"no address for {host}")) from failure


class _MeterConnection:
    """One kept-alive connection to the meter, opened with the transport's options and TLS.

    ``sock`` is set as soon as the TCP connection stands, before the TLS handshake, so
    that the watchdog can cut a handshake that outlasts the request's deadline. Requests
    and answers are HTTP/1.1 as ``http11`` writes and reads them, on one buffered reader
    for the life of the connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        options: tuple[tuple[int, int, Any], ...],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.host = host
        self.port = port
        self._options = options
        self._ssl_context = ssl_context
        self._host_header = http11.host_header(host, port, 443 if ssl_context else 80)
        # An address has no name to send (SNI) or check; the pinned certificate is the trust.
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            self._server_hostname: str | None = None
        except OSError:
            self._server_hostname = host
        self.sock: socket.socket | None = None
        self._rfile: http11.SocketReader | None = None
        #: Connections opened so far (a failure on a fresh one is worth a diagnosis).
        self.opened = 0
        self._timeout_s = 1.0

    def __del__(self) -> None:
        # A connection dropped without close() (a client nobody closed) closes its socket
        # here rather than leaving it open until the collector warns about it.
        if getattr(self, "sock", None) is not None:
            self.close()

    def connect(self) -> None:
        """Open the TCP connection and, with a context, shake hands over TLS."""
        self.opened += 1
        self.sock = open_socket(self.host, self.port, self._timeout_s, self._options)
        if self._ssl_context is not None:
            self.sock = self._ssl_context.wrap_socket(
                self.sock, server_hostname=self._server_hostname
            )
        self._rfile = http11.SocketReader(self.sock)

    def _streams(self) -> tuple[socket.socket, http11.SocketReader]:
        """The socket and its reader, connecting first when there are none."""
        if self.sock is None or self._rfile is None:
            self.connect()
        if self.sock is None or self._rfile is None:
            raise ConnectionError("the connection closed while it was being opened")
        return self.sock, self._rfile

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        sock, self.sock, self._rfile = self.sock, None, None
        if sock is not None:
            sock.close()

    def exchange(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> tuple[int, str, bytes]:
        """Send one request; ``(status, content type, body)``, the body cut after the limit.

        An answer larger than ``MAX_ANSWER_BYTES`` is not read further and its connection
        is closed; any other leaves the connection ready for the next request.
        """
        request = http11.request_bytes(method, url, self._host_header, headers, body)
        self._timeout_s = timeout_s
        if self.sock is not None:
            if self.sock.gettimeout() != timeout_s:
                self.sock.settimeout(timeout_s)
            # An idle kept-alive connection that reads as ready was closed by the meter
            # (or holds something no request asked for, received or still in the
            # socket): start afresh. poll, not select: select fails on descriptors
            # above 1023.
            ready = select.poll()
            ready.register(self.sock, select.POLLIN)
            leftover = self._rfile is not None and self._rfile.buffered
            # TLS: a record decrypted but not yet taken is in the SSL object, not the socket.
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                leftover = True
            if leftover or ready.poll(0):
                self.close()
        sock, rfile = self._streams()
        sock.sendall(request)
        answer = http11.read_answer(rfile, MAX_ANSWER_BYTES)
        if not answer.reusable:
            self.close()
        content_type = ", ".join(answer.headers.get_all("content-type"))
        return answer.status, content_type, answer.body


class Transport(Protocol):
    """What the meter client needs from a transport (fakes implement this too)."""

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        """Send one request; return the HTTP status and the body text."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...


def interface_socket_options(interface: str) -> tuple[tuple[int, int, int | bytes], ...]:
    """Socket options that send every request out of network ``interface`` ("" for any).

    Raises ``ConfigError`` naming ``interface`` when the machine has no such interface.
    """
    if not interface:
        return DEFAULT_SOCKET_OPTIONS
    try:
        socket.if_nametoindex(interface)
    except OSError:
        raise ConfigError("interface", f"no network interface named {interface!r}") from None
    if not hasattr(socket, "SO_BINDTODEVICE"):
        raise ConfigError("interface", "binding to an interface is not supported on this OS")
    return (
        *DEFAULT_SOCKET_OPTIONS,
        (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode()),
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, args, reasons), outermost first."""
    seen: set[int] = set()
    order: list[BaseException] = []
    layer: list[BaseException] = [exc]
    while layer:
        following: list[BaseException] = []
        for current in layer:
            if id(current) in seen:
                continue
            seen.add(id(current))
            order.append(current)
            linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
            linked.extend(current.args)
            following.extend(item for item in linked if isinstance(item, BaseException))
        layer = following
    return order


def is_stale_connection(exc: BaseException) -> bool:
    """True when ``exc`` looks like a dropped open connection, not an unreachable meter."""
    causes = _chain(exc)
    if any(isinstance(cause, _CONNECT_FAILURES) for cause in causes):
        return False
    return any(isinstance(cause, _DISCONNECTS) for cause in causes)


def _reason(exc: BaseException) -> str:
    """The innermost readable cause, e.g. 'ConnectionRefusedError: [Errno 111] ...'."""
    inner = _chain(exc)[-1]
    return f"{type(inner).__name__}: {inner}"


def _decode(body: bytes, content_type: str) -> str:
    """Decode with the declared charset, else UTF-8 (what the meter sends)."""
    # requests would assume ISO-8859-1 for text/* without a charset, or guess.
    match = _CHARSET.search(content_type)
    try:
        return body.decode(match.group(1) if match else "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _translate(
    method: str, path: str, timeout_s: float, exc: Exception, base_url: str
) -> Exception:
    """The package's error for what ``http.client`` (or the socket below it) raised."""
    if isinstance(exc, _DeadlinePassed):
        detail = f"no answer within {timeout_s:g} s: not complete by then"
        return MeterConnectionError(method, path, detail, base_url=base_url)
    if isinstance(exc, ssl.SSLError):
        detail = f"TLS handshake failed: {_reason(exc)}"
        return MeterTlsError(method, path, detail, base_url=base_url)
    if isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError):
        detail = f"no answer within {timeout_s:g} s: {_reason(exc)}"
        return MeterConnectionError(method, path, detail, base_url=base_url)
    if isinstance(exc, (OSError, http.client.HTTPException)):
        detail = f"connection failed: {_reason(exc)}"
        return MeterConnectionError(method, path, detail, base_url=base_url)
    return MeterError(method, path, f"unreadable answer: {_reason(exc)}", base_url=base_url)


class HttpTransport:
    """Requests to one meter at ``base_url`` with a per-request timeout.

    Give ``tls_certificate_pem`` (and an ``https://`` URL) to pin the meter's
    certificate; an unparsable PEM raises ``ConfigError`` here, not at the first request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        tls_certificate_pem: str = "",
        interface: str = "",
        certificate_source: str = "meter_tls_certificate",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://HOST[:PORT], got {base_url!r}")
        options = interface_socket_options(interface)
        context = pinned_ssl_context(tls_certificate_pem) if tls_certificate_pem else None
        self._ssl_context = context
        # https:// without a pinned certificate: the system's CAs and the host name, as
        # any HTTPS client would check them.
        self._handshake_context = context or (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self._pinned_der = certificate_der(tls_certificate_pem) if tls_certificate_pem else b""
        self._host = parts.hostname
        self._https = parts.scheme == "https"
        self._port = parts.port or (443 if self._https else 80)
        self._socket_options = options
        self._connection = self._new_connection()
        #: Whether the last failed attempt was on a connection opened for it.
        self._failed_fresh = False
        #: Where the user gives the certificate, for the hint when the meter speaks HTTPS.
        self._certificate_source = certificate_source
        #: The last request ended in a connection failure: while they go on failing, their
        #: retries log at DEBUG (one line per change of state, not per poll).
        self._failing = False

    def _new_connection(self) -> _MeterConnection:
        # With a pinned certificate, trust is that one certificate: no CA files, no hostname.
        return _MeterConnection(
            self._host,
            self._port,
            options=self._socket_options,
            ssl_context=self._handshake_context,
        )

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The pinned context HTTPS requests use, or None without a pinned PEM."""
        return self._ssl_context

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        """Send one request; return ``(status, body text)`` or raise a ``MeterError``.

        ``timeout_s`` overrides the transport's timeout for this request.
        """
        method = method.upper()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        policy = RetryPolicy(
            attempts=2,
            first_delay_s=0.0,
            max_delay_s=0.0,
            retryable=_dropped,
            idempotent=method in IDEMPOTENT_METHODS,
        )
        try:
            answer = policy.run(
                lambda: self._attempt(lambda: self._send(method, path, json_body, params, timeout)),
                what=f"{method} {path} on a kept-alive connection",
                before_retry=self._drop_pooled,
                quiet=self._failing,
            )
        except MeterConnectionError as err:
            self._failing = True
            hint = self._diagnose(err, timeout) if self._failed_fresh else ""
            if not hint:
                raise
            # Same class (the hierarchy callers catch), same cause, a message that helps.
            raise type(err)(
                err.method, err.endpoint, f"{err.detail}; {hint}", base_url=self.base_url
            ) from err.__cause__
        self._failing = False
        return answer

    def _attempt(self, send: Callable[[], tuple[int, str]]) -> tuple[int, str]:
        """``send()``, noting whether a failure happened on a connection opened for it."""
        opened = self._connection.opened
        try:
            return send()
        except MeterConnectionError:
            # A kept-alive connection that worked before cannot have the wrong scheme.
            self._failed_fresh = self._connection.opened > opened
            raise

    def _diagnose(self, err: MeterConnectionError, timeout_s: float) -> str:
        """What a failed fresh connection says about a scheme or certificate mix-up, or ""."""
        chain = _chain(err.__cause__) if err.__cause__ is not None else []
        if not chain or any(isinstance(cause, _NOT_A_MIX_UP) for cause in chain):
            return ""
        # Loaded on the first failure worth a second look: a working meter never needs it.
        from lem_dcbm.meter import probe

        where = probe.ProbeTarget(self._host, self._port, timeout_s, self._socket_options)
        if not self._https:
            # Asked first: an HTTP server answers at once, and waits on a TLS hello.
            if probe.speaks_plain_http(where) or probe.presented_certificate(where) is None:
                return ""
            return (
                "the meter seems to speak HTTPS on this port (its TLS is on): "
                f"give its certificate ({self._certificate_source}) to use https://"
            )
        if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in chain):
            presented = probe.presented_certificate(where)
            if presented is None or presented == self._pinned_der:
                return ""
            return (
                "the meter presents a certificate that differs from the configured one "
                f"(configured SHA-256 {sha256_fingerprint(self._pinned_der)}, "
                f"presented SHA-256 {sha256_fingerprint(presented)})"
            )
        if probe.speaks_plain_http(where):
            return (
                "the meter answers plain HTTP on this port (its TLS is off): "
                "switch its TLS on, or configure no certificate to use http://"
            )
        return ""

    def _drop_pooled(self, _error: BaseException) -> None:
        """The connection that failed is not used again: start afresh."""
        stale, self._connection = self._connection, self._new_connection()
        stale.close()

    def _send(
        self,
        method: str,
        path: str,
        json_body: object,
        params: Mapping[str, str] | None,
        timeout_s: float,
    ) -> tuple[int, str]:
        started = time.monotonic()
        url = f"{path}{'&' if '?' in path else '?'}{urlencode(params)}" if params else path
        body = None
        headers = {"Accept": "*/*"}
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        deadline = _WATCHDOG.arm(timeout_s)
        connection = self._connection
        _WATCHDOG.watch(deadline, connection)
        try:
            status, content_type, data = connection.exchange(method, url, body, headers, timeout_s)
            if _WATCHDOG.end(deadline):
                connection.close()
                raise _DeadlinePassed(f"the answer took longer than {timeout_s:g} s")
        except Exception as exc:
            if _WATCHDOG.end(deadline) and not isinstance(exc, _DeadlinePassed):
                connection.close()
                raise MeterConnectionError(
                    method,
                    path,
                    f"no answer within {timeout_s:g} s: not complete by then",
                    base_url=self.base_url,
                ) from _DeadlinePassed(f"cut at {timeout_s:g} s: {_reason(exc)}")
            # Whatever broke, the connection's state is unknown: the next request opens anew.
            connection.close()
            raise _translate(method, path, timeout_s, exc, self.base_url) from exc
        if len(data) > MAX_ANSWER_BYTES:
            raise MeterBodyError(
                method,
                path,
                f"the answer is larger than {MAX_ANSWER_BYTES} bytes (not read further)",
                data[:200],
                status,
                base_url=self.base_url,
            )
        text = _decode(data, content_type)
        _LOGGER.debug(
            "%s %s -> %d in %.0f ms", method, path, status, (time.monotonic() - started) * 1000
        )
        return status, text

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()
