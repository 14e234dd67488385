"""The meter's self-signed TLS certificate: a 1024-bit RSA key, like the real device's."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

_LOGGER = logging.getLogger(__name__)

#: The real meter's key size; modern OpenSSL refuses it below security level 1.
RSA_KEY_BITS = 1024
_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


def generate_certificate(
    common_name: str, valid_days: int = 3650, *, key_bits: int = RSA_KEY_BITS
) -> CertificatePair:
    """Create a self-signed certificate with an RSA key (1024 bits, like the meter's)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LEM"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.now(timezone.utc)
    # Like a device certificate: no SAN, no key usage; issuer == subject.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=valid_days))
        .sign(key, hashes.SHA256())
    )
    return CertificatePair(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def load_or_create_certificate(
    common_name: str, cert_path: Path | None, key_path: Path | None
) -> CertificatePair:
    """Reuse the pair stored at both paths, or generate one and write it where asked."""
    if cert_path and key_path and cert_path.exists() and key_path.exists():
        _LOGGER.info("reusing TLS certificate %s", cert_path)
        return CertificatePair(cert_path.read_bytes(), key_path.read_bytes())
    pair = generate_certificate(common_name)
    if cert_path:
        cert_path.write_bytes(pair.cert_pem)
    if key_path:
        key_path.write_bytes(pair.key_pem)
        os.chmod(key_path, 0o600)
    return pair


def meter_pem_form(cert_pem: bytes) -> str:
    """The certificate as ``/v1/certificate`` serves it: no line break after BEGIN or before END."""
    text = cert_pem.decode("ascii").strip()
    body = text.replace(_BEGIN, "").replace(_END, "").strip()
    return _BEGIN + body + _END
