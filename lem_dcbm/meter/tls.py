"""Pinned TLS for the meter: trust exactly the meter's own self-signed certificate.

The meter has no CA behind it and a 1024-bit RSA key, which OpenSSL refuses at its
default security level. The context built here lowers the level to 1 for this
connection only, keeps TLS >= 1.2, skips the hostname check (the meter is addressed by
IP and its certificate does not name it) and still verifies the certificate against
the one pinned PEM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
import textwrap

from lem_dcbm.errors import ConfigError

#: The configuration key every PEM problem is reported under.
CONFIG_KEY = "meter_tls_certificate"

_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"
_PEM_BLOCK = re.compile(re.escape(_BEGIN) + r"(.*?)" + re.escape(_END), re.DOTALL)
# A PEM copied out of a JSON string sometimes keeps its escapes as text; base64 never
# contains a backslash, so removing them cannot change the certificate.
_NOISE = re.compile(r"\\[nrt]|\s")


def normalize_pem(text: str) -> str:
    """Return ``text`` as a canonical PEM certificate (64-column lines, final newline).

    Accepts ordinary PEM and the line-break-less form that ``GET /v1/certificate``
    serves; raises ``ConfigError`` when it is not exactly one X.509 certificate.
    """
    blocks = _PEM_BLOCK.findall(text or "")
    if not blocks:
        raise ConfigError(CONFIG_KEY, f"no '{_BEGIN}' ... '{_END}' block found")
    if len(blocks) > 1:
        # Pinning means trusting one certificate; a bundle would widen the trust.
        raise ConfigError(CONFIG_KEY, f"expected one certificate, found {len(blocks)}")
    body = _NOISE.sub("", blocks[0])
    if not body:
        raise ConfigError(CONFIG_KEY, "the certificate block is empty (only its header and footer)")
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(CONFIG_KEY, f"certificate body is not base64: {exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # OpenSSL parses it as it will when pinning (no X.509 library loaded for this).
        context.load_verify_locations(cadata=der)
    except (ssl.SSLError, ValueError) as exc:  # ValueError: nothing decoded at all
        raise ConfigError(CONFIG_KEY, f"not a parsable X.509 certificate: {exc}") from None
    count = context.cert_store_stats()["x509"]
    if count != 1:
        # One PEM block can hold several DER certificates back to back: a bundle too.
        raise ConfigError(CONFIG_KEY, f"expected one certificate, the block holds {count}")
    lines = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"{_BEGIN}\n{lines}\n{_END}\n"


def pinned_ssl_context(pem: str) -> ssl.SSLContext:
    """Build a client context that trusts exactly the certificate in ``pem``."""
    # PROTOCOL_TLS_CLIENT loads no CA store by itself; only the pinned PEM is added.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Level 1 admits the meter's 1024-bit RSA key; it applies to this context only.
    context.set_ciphers("DEFAULT:@SECLEVEL=1")
    # Python 3.13 sets X509_STRICT on default contexts, which rejects device
    # certificates lacking extensions; keep the same behaviour on every version.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    # The pinned certificate is the trust anchor even if it is not self-signed.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=normalize_pem(pem))
    return context


def certificate_der(pem: str) -> bytes:
    """The DER bytes of the one certificate in ``pem`` (any form ``normalize_pem`` takes)."""
    return ssl.PEM_cert_to_DER_cert(normalize_pem(pem))


def sha256_fingerprint(der: bytes) -> str:
    """The certificate's SHA-256 fingerprint as ``AB:CD:...``, as openssl and browsers show it."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())
