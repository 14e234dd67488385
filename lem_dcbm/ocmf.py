"""Reading and checking signed OCMF records (``OCMF|{payload}|{signature}``).

The signature covers the payload JSON exactly as the meter sent it, so the record is
split on the text, never re-serialised: ``payload_text`` holds those exact characters.

``verify_ocmf`` checks the signature with the pure-Python ``ecdsa`` package: a running
module verifies two records per transaction, and cryptography's OpenSSL bindings would
stay in its memory for that (about 9 MB, ``ecdsa`` less than 1 MB) at the price of about
2 ms per verification. ``tests/unit/test_ocmf.py`` holds its verdicts equal to
cryptography's, ``tests/unit/test_pyocmf_crosscheck.py`` to pyocmf's. ``load_public_key``
(the tools' key reader) still uses cryptography, loaded when a tool calls it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lem_dcbm.json_types import JsonObject

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec
    from ecdsa import VerifyingKey
    from ecdsa.curves import Curve

PREFIX = "OCMF|"
#: The only algorithm LEM meters use, and OCMF's default when ``SA`` is absent.
DEFAULT_ALGORITHM = "ECDSA-secp256r1-SHA256"
#: Algorithm -> (``ecdsa``'s name of the curve, the digest).
_ALGORITHMS: Mapping[str, tuple[str, Callable[..., Any]]] = {
    "ECDSA-secp256r1-SHA256": ("NIST256p", hashlib.sha256),
}
#: SEC 2 names of the curves ``ecdsa`` knows (errors name curves as OCMF and OpenSSL do).
_SEC_NAMES = {"NIST256p": "secp256r1", "NIST384p": "secp384r1", "NIST521p": "secp521r1"}
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


def verifying_key(key: str) -> VerifyingKey:
    """``ecdsa``'s key for a public key given as ``load_public_key`` takes it."""
    # Imported here: a module that runs no transaction never loads the verifier.
    from ecdsa import NIST256p, VerifyingKey

    key = key.strip()
    try:
        if key.startswith("-----BEGIN"):
            return VerifyingKey.from_pem(key)
        der = _key_bytes(key)
        if len(der) == 65 and der[0] == 4:
            # A bare uncompressed point, as some meters print it.
            return VerifyingKey.from_string(der, curve=NIST256p)
        return VerifyingKey.from_der(der)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - ecdsa's parse errors share no base class
        raise ValueError(f"public key is not an EC public key: {exc}") from exc


def _curve_name(curve: Curve) -> str:
    name: str = curve.name
    return _SEC_NAMES.get(name, name)


def verify_ocmf(text: str, public_key_hex: str) -> bool:
    """True when the record's signature verifies with the key (``publicKeyOcmf``).

    Raises ``ValueError`` when the record or key cannot be read or the algorithm is not
    supported; a well-formed record with a wrong signature gives False.
    """
    record = parse_ocmf(text)
    if record.signature_algorithm not in _ALGORITHMS:
        raise ValueError(f"unsupported OCMF signature algorithm {record.signature_algorithm!r}")
    from ecdsa import BadSignatureError
    from ecdsa.util import sigdecode_der

    curve, digest = _ALGORITHMS[record.signature_algorithm]
    key = verifying_key(public_key_hex)
    if key.curve.name != curve:
        raise ValueError(
            f"public key is on {_curve_name(key.curve)}, "
            f"the record needs {_SEC_NAMES.get(curve, curve)}"
        )
    try:
        return bool(
            key.verify(
                bytes.fromhex(record.signature_hex),
                record.payload_text.encode("utf-8"),
                hashfunc=digest,
                sigdecode=sigdecode_der,
            )
        )
    except BadSignatureError:
        return False
