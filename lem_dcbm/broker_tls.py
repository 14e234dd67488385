"""The TLS context for the MQTT broker link, and the secrets read for it.

Trusts only the configured CA file (no system store: a broker of a charger is signed by
the operator's own CA), checks the broker's host name, TLS 1.2 or newer, and presents a
client certificate when one is configured. Errors name the setting, never file contents.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NoReturn

from lem_dcbm.errors import ConfigError

#: A password file larger than this is not a password file.
MAX_PASSWORD_BYTES = 4096


def read_password_file(key: str, path: str) -> str:
    """The password in ``path`` (first line, without its line break); ``ConfigError`` else."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise ConfigError(key, f"{path} is larger than {MAX_PASSWORD_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError(key, f"{path} holds no password")
    return password


class _ClosedOnFailedHandshake(ssl.SSLSocket):
    """A TLS socket that closes itself when its handshake fails.

    paho leaves the socket of a failed handshake to the garbage collector: one unclosed
    socket (and a ResourceWarning) per refused attempt while the module retries.
    """

    def do_handshake(self, block: bool = False) -> None:
        """Handshake as usual; on failure close the socket, then raise."""
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


#: The variables the TLS files come from, as a ConfigError names them.
TLS_FILE_VARIABLES = ("EV_MQTT_TLS_CA_FILE", "EV_MQTT_TLS_CERT_FILE", "EV_MQTT_TLS_KEY_FILE")


def broker_ssl_context(
    ca_file: str,
    cert_file: str | None = None,
    key_file: str | None = None,
    *,
    names: tuple[str, str, str] = TLS_FILE_VARIABLES,
) -> ssl.SSLContext:
    """A client context that trusts only ``ca_file``; ``ConfigError`` naming a bad file.

    ``names`` are what the CA, certificate and key came from (variables or options).
    """
    ca_name, cert_name, key_name = names
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _ClosedOnFailedHandshake
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(ca_name, _unusable(ca_file, exc)) from None
    if cert_file:

        def encrypted_key() -> NoReturn:
            # Without this callback OpenSSL would prompt on the terminal.
            raise ConfigError(key_name, "encrypted keys are not supported")

        try:
            context.load_cert_chain(cert_file, key_file or None, password=encrypted_key)
        except (OSError, ValueError) as exc:
            raise ConfigError(cert_name, _unusable(cert_file, exc)) from None
    return context


def _unusable(path: str, exc: BaseException) -> str:
    # ssl errors carry OpenSSL's reason ("PEM lib", "no certificate or crl found"), no data.
    reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
    return f"cannot use {path}: {reason}"
