"""ECDSA verification on P-256 (secp256r1) with SHA-256, in pure Python.

A running module verifies two OCMF records per transaction. Doing that with
cryptography would keep its OpenSSL bindings resident for the life of the process (about
8 MB), and the ``ecdsa`` package with ``six`` about 0.7 MB; this module takes a few tens
of kB and about 2 ms per verification. It verifies only: every input (key, signature,
message) is public, so nothing here needs to run in constant time. Its verdicts are held
equal to cryptography's by tests/unit/test_p256.py and tests/unit/test_ocmf.py.

Besides the curve arithmetic it reads the two DER structures verification needs: an
ECDSA signature (strict DER, as OpenSSL demands) and a SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

#: The curve's SEC 2 name, as OCMF's algorithm names and OpenSSL spell it.
CURVE = "secp256r1"

# SEC 2 (and FIPS 186-4 D.1.2.3): y^2 = x^3 - 3x + b over the prime field of P.
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
#: The order of the generator G.
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

_ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
#: Named curves by OID, so that a key on another curve can be named in the error.
_CURVES = {
    "1.2.840.10045.3.1.7": CURVE,
    "1.2.840.10045.3.1.1": "secp192r1",
    "1.3.132.0.33": "secp224r1",
    "1.3.132.0.34": "secp384r1",
    "1.3.132.0.35": "secp521r1",
    "1.3.132.0.10": "secp256k1",
    "1.3.36.3.3.2.8.1.1.7": "brainpoolP256r1",
    "1.3.36.3.3.2.8.1.1.11": "brainpoolP384r1",
    "1.3.36.3.3.2.8.1.1.13": "brainpoolP512r1",
}
#: Other public key algorithms, to name them in the error.
_OTHER_KEYS = {
    "1.2.840.113549.1.1.1": "an RSA key",
    "1.2.840.10040.4.1": "a DSA key",
    "1.3.101.110": "an X25519 key",
    "1.3.101.111": "an X448 key",
    "1.3.101.112": "an Ed25519 key",
    "1.3.101.113": "an Ed448 key",
}

_SEQUENCE, _INTEGER, _BIT_STRING, _OID = 0x30, 0x02, 0x03, 0x06
_NOT_EC = "public key is not an EC public key"


class PublicKey(NamedTuple):
    """A point on P-256, checked to be on the curve and not the point at infinity."""

    x: int
    y: int


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def decode_point(data: bytes) -> PublicKey:
    """The point of an SEC 1 encoding, uncompressed (04 X Y) or compressed (02/03 X).

    Raises ``ValueError`` for another form, the point at infinity (00), or a point not on
    the curve.
    """
    if data[:1] == b"\x04" and len(data) == 65:
        x, y = int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big")
    elif data[:1] in (b"\x02", b"\x03") and len(data) == 33:
        x = int.from_bytes(data[1:], "big")
        # P = 3 (mod 4): a square a has the square roots +-a^((P+1)/4).
        y = pow((x * x * x - 3 * x + B) % P, (P + 1) // 4, P)
        if (y & 1) != (data[0] & 1):
            y = P - y
    elif data == b"\x00":
        raise ValueError(f"{_NOT_EC}: its point is the point at infinity")
    else:
        raise ValueError(f"{_NOT_EC}: {len(data)} bytes are not a point on {CURVE}")
    # Also catches an x >= P, and a compressed x with no point (y^2 is then not x^3-3x+b).
    if not _on_curve(x, y):
        raise ValueError(f"{_NOT_EC}: its point is not on {CURVE}")
    return PublicKey(x, y)


def _tlv(data: bytes, at: int, tag: int) -> tuple[bytes, int]:
    """The contents of the DER element of ``tag`` at ``at``, and the index after it.

    Strict DER: the definite length in its shortest form, within ``data``.
    """
    if at + 2 > len(data) or data[at] != tag:
        raise ValueError(f"expected DER tag {tag:#04x} at byte {at}")
    length, at = data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or at + count > len(data):
            raise ValueError(f"bad DER length at byte {at - 1}")
        length = int.from_bytes(data[at : at + count], "big")
        if data[at] == 0 or length < 0x80:
            raise ValueError(f"DER length not in its shortest form at byte {at - 1}")
        at += count
    if at + length > len(data):
        raise ValueError(f"DER element at byte {at} runs past the end")
    return data[at : at + length], at + length


def _unsigned(contents: bytes) -> int:
    """A DER INTEGER's value; its encoding must be minimal and its value not negative."""
    if not contents:
        raise ValueError("empty DER INTEGER")
    if contents[0] & 0x80:
        raise ValueError("negative DER INTEGER")
    if len(contents) > 1 and contents[0] == 0 and not contents[1] & 0x80:
        raise ValueError("DER INTEGER not in its shortest form")
    return int.from_bytes(contents, "big")


def decode_signature(der: bytes) -> tuple[int, int]:
    """``(r, s)`` of a DER ``SEQUENCE { INTEGER r, INTEGER s }``, with nothing after it.

    Only the canonical encoding is accepted, as OpenSSL accepts only that.
    """
    body, end = _tlv(der, 0, _SEQUENCE)
    if end != len(der):
        raise ValueError("bytes after the DER signature")
    r, at = _tlv(body, 0, _INTEGER)
    s, at = _tlv(body, at, _INTEGER)
    if at != len(body):
        raise ValueError("more than two values in the DER signature")
    return _unsigned(r), _unsigned(s)


def _oid(contents: bytes) -> str:
    """An OBJECT IDENTIFIER's dotted form."""
    if not contents or contents[-1] & 0x80:
        raise ValueError("bad DER OBJECT IDENTIFIER")
    arcs, value = [], 0
    for byte in contents:
        if value == 0 and byte == 0x80:
            raise ValueError("DER OBJECT IDENTIFIER not in its shortest form")
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def public_key_info(der: bytes) -> tuple[str, bytes]:
    """The curve's name and the encoded point of an EC SubjectPublicKeyInfo (RFC 5480).

    Raises ``ValueError`` naming the problem: not DER, not an EC key, a curve given by
    parameters rather than by name, or a curve not known here by name. The point is not
    read: ``decode_point`` does that, for P-256.
    """
    try:
        info, end = _tlv(der, 0, _SEQUENCE)
        algorithm, at = _tlv(info, 0, _SEQUENCE)
        key_bits, after = _tlv(info, at, _BIT_STRING)
        if end != len(der) or after != len(info):
            raise ValueError("bytes after it")
        kind, at = _tlv(algorithm, 0, _OID)
        key_type = _oid(kind)
        # namedCurve is an OID; specifiedCurve (explicit parameters) a SEQUENCE.
        named, curve = algorithm[at : at + 1] == bytes([_OID]), ""
        if named:
            parameters, end = _tlv(algorithm, at, _OID)
            curve = _oid(parameters)
            if end != len(algorithm):
                raise ValueError("bytes after the curve's name")
    except ValueError as exc:
        raise ValueError(f"{_NOT_EC}: not a DER SubjectPublicKeyInfo ({exc})") from exc
    if key_type != _ID_EC_PUBLIC_KEY:
        other = _OTHER_KEYS.get(key_type, f"a key of type {key_type}")
        raise ValueError(f"{_NOT_EC} but {other}")
    if not named:
        raise ValueError("public key gives its curve by parameters, not by name")
    if curve not in _CURVES:
        raise ValueError(f"public key is on a curve not known here (OID {curve})")
    if key_bits[:1] != b"\x00":
        raise ValueError(f"{_NOT_EC}: its key bits are not whole bytes")
    return _CURVES[curve], key_bits[1:]


# Points in Jacobian coordinates (X, Y, Z) stand for (X/Z^2, Y/Z^3); Z = 0 is infinity.
_Jacobian = tuple[int, int, int]
_INFINITY: _Jacobian = (1, 1, 0)


def _double(point: _Jacobian) -> _Jacobian:
    """2 * point ("dbl-2001-b", for a = -3)."""
    x, y, z = point
    if z == 0 or y == 0:
        return _INFINITY
    delta = z * z % P
    gamma = y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y + z) * (y + z) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add_affine(point: _Jacobian, x2: int, y2: int) -> _Jacobian:
    """point + (x2, y2), the second point affine and not infinity ("madd")."""
    x1, y1, z1 = point
    if z1 == 0:
        return x2, y2, 1
    z1z1 = z1 * z1 % P
    h = (x2 * z1z1 - x1) % P
    r = (y2 * z1 * z1z1 - y1) % P
    if h == 0:
        # The same x: the same point (double it) or its negative (the sum is infinity).
        return _double(point) if r == 0 else _INFINITY
    hh = h * h % P
    hhh = h * hh % P
    v = x1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - y1 * hhh) % P
    return x3, y3, z1 * h % P


def _affine(point: _Jacobian) -> tuple[int, int] | None:
    """(x, y) of a Jacobian point; None for infinity."""
    x, y, z = point
    if z == 0:
        return None
    inverse = pow(z, -1, P)
    inverse2 = inverse * inverse % P
    return x * inverse2 % P, y * inverse2 * inverse % P


def _combination(u1: int, u2: int, key: PublicKey) -> tuple[int, int] | None:
    """u1*G + u2*Q in one pass over the bits of both (Shamir's trick); None for infinity."""
    both = _affine(_add_affine((GX, GY, 1), key.x, key.y))
    table: dict[tuple[int, int], tuple[int, int] | None] = {
        (1, 0): (GX, GY),
        (0, 1): (key.x, key.y),
        (1, 1): both,
    }
    accumulator = _INFINITY
    for bit in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):
        accumulator = _double(accumulator)
        addend = table.get((u1 >> bit & 1, u2 >> bit & 1))
        if addend is not None:
            accumulator = _add_affine(accumulator, *addend)
    return _affine(accumulator)


def verify(key: PublicKey, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` (DER) is an ECDSA signature of SHA-256(``message``).

    A signature that is not canonical DER, or whose r or s lies outside [1, n-1], is
    False. A high s (n - s of a genuine signature) verifies, as with OpenSSL.
    """
    try:
        r, s = decode_signature(signature)
    except ValueError:
        return False
    if not (1 <= r < N and 1 <= s < N):
        return False
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    w = pow(s, -1, N)
    point = _combination(e * w % N, r * w % N, key)
    return point is not None and point[0] % N == r
