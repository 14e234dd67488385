"""The package's exception tree.

    LemDcbmError
    ├── ConfigError               bad configuration (the process exits with code 2)
    ├── ControllerError           a step the meter's answers made impossible (no HTTP detail)
    ├── MeterError                the meter could not be asked or answered badly
    │   ├── MeterConnectionError  no answer: refused, reset, timed out
    │   │   └── MeterTlsError     the TLS handshake failed (wrong or unpinned certificate)
    │   ├── MeterStatusError      an answer with an unexpected HTTP status
    │   └── MeterBodyError        an answer whose body is not what the API promises
    ├── UsageError                a tool's bad option or input (one line, exit code 2)
    └── ...                       each module's own errors, defined where they are raised
                                  (``RecordMissing``, ``EnvelopeError``, ``Refusal``, ...)

Every exception class of the package derives from ``LemDcbmError``
(``tests/unit/test_exception_tree.py`` walks the package); one that callers catch as
``ValueError``, ``RuntimeError`` or ``TimeoutError`` keeps that class as a second base.
Only ``lem_dcbm.meter.transport`` translates ``http.client``, socket and TLS exceptions
into the meter's errors, always with ``raise ... from``.
"""

from __future__ import annotations

BODY_EXCERPT_CHARS = 200


def excerpt(body: str | bytes, limit: int = BODY_EXCERPT_CHARS) -> str:
    """Return a short, single-line excerpt of a response body for error messages."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    flat = " ".join(body.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


#: Longest rendering of a value from outside (a config value, a key) in a message or log line.
SHOWN_VALUE_CHARS = 80


def cut(text: str, limit: int = SHOWN_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (ending in ``...`` when cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: object, limit: int = SHOWN_VALUE_CHARS) -> str:
    """``repr(value)``, cut: a 1 MB value is never logged in full."""
    return cut(repr(value), limit)


class LemDcbmError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(LemDcbmError):
    """A configuration value is missing or invalid; ``key`` names it.

    The message says what ``key`` is: a command-line option (``--config``), an
    environment variable (``EV_MQTT_*``, ``LEM_DCBM_*``), a config file, or a config key.
    """

    def __init__(self, key: str, problem: str, *, kind: str | None = None) -> None:
        super().__init__(f"{kind or _kind_of(key)} '{key}': {problem}")
        self.key = key
        self.problem = problem


def _kind_of(key: str) -> str:
    if key.startswith("-"):
        return "option"
    # Config keys such as IT or SC are upper case too: only these prefixes name variables.
    if key.startswith(("EV_", "LEM_DCBM_")):
        return "environment variable"
    return "config key"


class UsageError(LemDcbmError):
    """A tool's bad option or input: said in one line, exit code 2."""


class ControllerError(LemDcbmError):
    """The meter answered, but its answers make a step impossible (e.g. a refused setting).

    Raised by the controller, which knows no HTTP: the message says what failed, not where.
    """


class MeterError(LemDcbmError):
    """A request to the meter failed; the message names the method and the full URL.

    ``base_url`` (``scheme://host:port``) makes the URL: with several meters, or a meter
    that speaks another scheme than configured, the path alone says too little.
    """

    def __init__(self, method: str, endpoint: str, detail: str, *, base_url: str = "") -> None:
        self.method = method
        self.endpoint = endpoint
        self.detail = detail
        self.base_url = base_url
        super().__init__(f"{method} {self.url}: {detail}")

    @property
    def url(self) -> str:
        """``scheme://host:port/path``, or the path alone when the address is unknown."""
        return f"{self.base_url}{self.endpoint}"


class MeterConnectionError(MeterError):
    """The meter did not answer (connection refused or reset, timeout)."""


class MeterTlsError(MeterConnectionError):
    """The TLS handshake with the meter failed; the certificate is not the pinned one."""


class MeterStatusError(MeterError):
    """The meter answered with an HTTP status the API does not promise for this call."""

    def __init__(
        self, method: str, endpoint: str, status: int, body: str | bytes, *, base_url: str = ""
    ) -> None:
        self.status = status
        self.body_excerpt = excerpt(body)
        super().__init__(
            method,
            endpoint,
            f"unexpected HTTP status {status}, body: '{self.body_excerpt}'",
            base_url=base_url,
        )


class MeterBodyError(MeterError):
    """The meter answered with a body that could not be understood."""

    def __init__(
        self,
        method: str,
        endpoint: str,
        reason: str,
        body: str | bytes,
        status: int = 200,
        *,
        base_url: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        self.body_excerpt = excerpt(body)
        super().__init__(
            method,
            endpoint,
            f"unexpected body (HTTP {status}): {reason}; body: '{self.body_excerpt}'",
            base_url=base_url,
        )
