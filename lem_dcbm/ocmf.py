"""Reading and checking signed OCMF records (``OCMF|{payload}|{signature}``).

The signature covers the payload JSON exactly as the meter sent it, so the record is
split on the text, never re-serialised: ``payload_text`` holds those exact characters.

``verify_ocmf`` checks the signature with the package's own pure-Python P-256 code
(``lem_dcbm.p256``): a running module verifies two records per transaction, and
cryptography's OpenSSL bindings would stay in its memory for that (about 8 MB) at the
price of about 2 ms per verification. ``tests/unit/test_ocmf.py`` and
``tests/unit/test_p256.py`` hold its verdicts equal to cryptography's,
``tests/unit/test_pyocmf_crosscheck.py`` to pyocmf's. ``load_public_key`` (the tools' key
reader) uses cryptography, loaded when a tool calls it.
"""

from __future__ import annotations

import base64
import binascii
import json
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lem_dcbm.json_types import JsonObject

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from lem_dcbm.p256 import PublicKey

PREFIX = "OCMF|"
#: The only algorithm LEM meters use, and OCMF's default when ``SA`` is absent.
DEFAULT_ALGORITHM = "ECDSA-secp256r1-SHA256"
#: The algorithms ``verify_ocmf`` checks: ECDSA on secp256r1 with SHA-256 (``p256``).
_ALGORITHMS = frozenset({DEFAULT_ALGORITHM})
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class OcmfRecord:
    """One OCMF record split into its signed payload and its signature."""

    #: The payload JSON exactly as sent: the bytes the signature covers.
    payload_text: str
    #: The payload decoded.
    payload: dict[str, Any]
    #: ``SA``, e.g. ``ECDSA-secp256r1-SHA256``.
    signature_algorithm: str
    #: ``SD``: the DER-encoded signature in hex.
    signature_hex: str


def _object_at(text: str, start: int, what: str) -> tuple[JsonObject, int]:
    """Decode the JSON object at ``start`` (after blanks); return it and its end index."""
    begin = start
    while begin < len(text) and text[begin] in " \t\r\n":
        begin += 1
    try:
        value, end = _DECODER.raw_decode(text, begin)
    except ValueError as exc:
        raise ValueError(f"OCMF {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"OCMF {what} is not a JSON object")
    return value, end


def parse_ocmf(text: str) -> OcmfRecord:
    """Split an OCMF record; raise ``ValueError`` saying what is wrong with it."""
    if not text.startswith(PREFIX):
        raise ValueError(f"not an OCMF record: it does not start with '{PREFIX}'")
    # Decoding the payload finds its real end even if a string in it contains '|'.
    payload, end = _object_at(text, len(PREFIX), "payload")
    if text[end : end + 1] != "|":
        raise ValueError(f"OCMF payload is not followed by '|' (at character {end})")
    signature, sig_end = _object_at(text, end + 1, "signature")
    if text[sig_end:].strip():
        raise ValueError(f"unexpected text after the OCMF signature (at character {sig_end})")
    algorithm = signature.get("SA", DEFAULT_ALGORITHM)
    signature_hex = signature.get("SD")
    if not isinstance(algorithm, str):
        raise ValueError("OCMF signature field 'SA' is not a string")
    if not isinstance(signature_hex, str) or not signature_hex:
        raise ValueError("OCMF signature field 'SD' is missing")
    if signature.get("SE", "hex") != "hex" or not all(c in string.hexdigits for c in signature_hex):
        raise ValueError("OCMF signature field 'SD' is not hex")
    return OcmfRecord(
        payload_text=text[len(PREFIX) : end],
        payload=payload,
        signature_algorithm=algorithm,
        signature_hex=signature_hex,
    )


def load_public_key(key: str) -> ec.EllipticCurvePublicKey:
    """Load an EC public key given as hex or base64 DER SubjectPublicKeyInfo (or PEM)."""
    # Imported here: only the tools read keys as cryptography objects.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = key.strip()
    if key.startswith("-----BEGIN"):
        loaded = serialization.load_pem_public_key(key.encode("ascii"))
    else:
        der = _key_bytes(key)
        if len(der) == 65 and der[0] == 4:
            # A bare uncompressed point, as some meters print it.
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), der)
        loaded = serialization.load_der_public_key(der)
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise ValueError(f"public key is not an EC key but {type(loaded).__name__}")
    return loaded


def _key_bytes(key: str) -> bytes:
    compact = "".join(key.split())
    if compact and len(compact) % 2 == 0 and all(c in string.hexdigits for c in compact):
        return bytes.fromhex(compact)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key is neither hex nor base64") from exc


def _pem_der(pem: str) -> bytes:
    """The DER of one ``-----BEGIN PUBLIC KEY-----`` block."""
    lines = [line.strip() for line in pem.strip().splitlines()]
    label = lines[0][len("-----BEGIN ") :].split("-----")[0]
    if label != "PUBLIC KEY" or lines[-1] != "-----END PUBLIC KEY-----":
        raise ValueError(f"public key PEM holds {label!r}, not one 'PUBLIC KEY' block")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key PEM is not base64") from exc


def verifying_key(key: str) -> PublicKey:
    """The secp256r1 point of a public key given as ``load_public_key`` takes it.

    Raises ``ValueError`` naming the problem: unreadable, not an EC key, on another curve
    (``public key is on secp384r1, the record needs secp256r1``), or not a curve point.
    """
    # Imported here: a module that runs no transaction never loads the verifier.
    from lem_dcbm import p256

    key = key.strip()
    if key.startswith("-----BEGIN"):
        der = _pem_der(key)
    else:
        der = _key_bytes(key)
        if len(der) == 65 and der[0] == 4:
            # A bare uncompressed point, as some meters print it.
            return p256.decode_point(der)
    curve, point = p256.public_key_info(der)
    if curve != p256.CURVE:
        raise ValueError(f"public key is on {curve}, the record needs {p256.CURVE}")
    return p256.decode_point(point)


def verify_ocmf(text: str, public_key_hex: str) -> bool:
    """True when the record's signature verifies with the key (``publicKeyOcmf``).

    Raises ``ValueError`` when the record or key cannot be read or the algorithm is not
    supported; a well-formed record with a wrong signature gives False.
    """
    record = parse_ocmf(text)
    if record.signature_algorithm not in _ALGORITHMS:
        raise ValueError(f"unsupported OCMF signature algorithm {record.signature_algorithm!r}")
    from lem_dcbm import p256

    key = verifying_key(public_key_hex)
    return p256.verify(
        key, bytes.fromhex(record.signature_hex), record.payload_text.encode("utf-8")
    )
