"""Self-signed certificates for TLS tests, including look-alikes of a given certificate.

A look-alike copies subject, issuer, serial number and validity of a certificate but
carries a different key: to a human reading it, it is the same certificate; to a
client that pins the original, it must be a stranger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lem_dcbm.simulator.certs import generate_certificate

BEGIN = "-----BEGIN CERTIFICATE-----"
END = "-----END CERTIFICATE-----"


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert_pem: str
    key_pem: str

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.crt`` and ``stem.key`` into ``directory``; return both paths."""
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        cert_path.write_text(self.cert_pem)
        key_path.write_text(self.key_pem)
        return cert_path, key_path


def _pair(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> CertPair:
    return CertPair(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
    )


def make_self_signed(common_name: str = "DCBM", *, key_bits: int = 1024) -> CertPair:
    """A device-like self-signed certificate: RSA key, no SAN, issuer == subject."""
    pair = generate_certificate(common_name, valid_days=365, key_bits=key_bits)
    return CertPair(cert_pem=pair.cert_pem.decode("ascii"), key_pem=pair.key_pem.decode("ascii"))


def look_alike(cert_pem: str | bytes) -> CertPair:
    """A certificate with the same subject, issuer, serial and validity, but a new key."""
    data = cert_pem.encode("ascii") if isinstance(cert_pem, str) else cert_pem
    original = x509.load_pem_x509_certificate(data)
    original_key = original.public_key()
    bits = original_key.key_size if isinstance(original_key, rsa.RSAPublicKey) else 2048
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    builder = (
        x509.CertificateBuilder()
        .subject_name(original.subject)
        .issuer_name(original.issuer)
        .public_key(key.public_key())
        .serial_number(original.serial_number)
        .not_valid_before(original.not_valid_before_utc)
        .not_valid_after(original.not_valid_after_utc)
    )
    for extension in original.extensions:
        if extension.oid.dotted_string in ("2.5.29.14", "2.5.29.35"):
            continue  # key identifiers would name the original key
        builder = builder.add_extension(extension.value, extension.critical)
    return _pair(builder.sign(key, hashes.SHA256()), key)


def line_breakless(cert_pem: str) -> str:
    """The certificate as ``GET /v1/certificate`` serves it: one line, no breaks."""
    body = "".join(cert_pem.replace(BEGIN, "").replace(END, "").split())
    return BEGIN + body + END
