"""The package's own P-256 verifier beside cryptography (OpenSSL): the same verdicts."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from lem_dcbm import p256
from lem_dcbm.ocmf import parse_ocmf
from tests.support.record_samples import REAL_RECORD_FILE

N, P = p256.N, p256.P
SECRETS = st.integers(1, N - 1)
MESSAGES = st.binary(max_size=64)
#: Each verification takes about 2 ms: a few dozen examples keep the file near 1 s.
FEW = settings(max_examples=40, deadline=None)


def private(secret: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(secret, ec.SECP256R1())


def point_bytes(key: ec.EllipticCurvePublicKey, compressed: bool = False) -> bytes:
    form = serialization.PublicFormat.CompressedPoint if compressed else None
    return key.public_bytes(
        serialization.Encoding.X962, form or serialization.PublicFormat.UncompressedPoint
    )


def ours(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    return p256.verify(p256.decode_point(point_bytes(key)), signature, message)


def theirs(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def der(tag: int, contents: bytes) -> bytes:
    """One DER element (short or long length form, as needed)."""
    if len(contents) < 0x80:
        return bytes([tag, len(contents)]) + contents
    size = len(contents).to_bytes((len(contents).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + contents


def oid(dotted: str) -> bytes:
    first, second, *rest = (int(arc) for arc in dotted.split("."))
    body = b""
    for arc in (40 * first + second, *rest):
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | arc & 0x7F)
        body += bytes(reversed(chunk))
    return der(0x06, body)


def spki(point: bytes, curve: str = "1.2.840.10045.3.1.7") -> bytes:
    """An EC SubjectPublicKeyInfo built by hand (cryptography writes uncompressed only)."""
    algorithm = der(0x30, oid("1.2.840.10045.2.1") + oid(curve))
    return der(0x30, algorithm + der(0x03, b"\x00" + point))


@FEW
@given(secret=SECRETS, message=MESSAGES)
def test_what_cryptography_signs_verifies(secret: int, message: bytes) -> None:
    key = private(secret)
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))

    assert ours(key.public_key(), signature, message) is True


@FEW
@given(
    secret=SECRETS,
    message=MESSAGES,
    part=st.sampled_from(["message", "r", "s", "key"]),
    bit=st.integers(0, 255),
)
def test_a_flipped_bit_fails(secret: int, message: bytes, part: str, bit: int) -> None:
    key = private(secret)
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(signature)
    public = point_bytes(key.public_key(), compressed=True)
    if part == "message":
        altered = bytearray(message or b"\x00")  # the empty message becomes b"\x01"
        altered[bit // 8 % len(altered)] ^= 1 << bit % 8
        message = bytes(altered)
    elif part == "r":
        signature = encode_dss_signature(r ^ 1 << bit, s)
    elif part == "s":
        signature = encode_dss_signature(r, s ^ 1 << bit)
    else:
        x = int.from_bytes(public[1:], "big") ^ 1 << bit
        public = public[:1] + x.to_bytes(32, "big")
    try:
        other = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
    except ValueError:
        # No point with that x: both refuse the key.
        with pytest.raises(ValueError, match="not on secp256r1"):
            p256.decode_point(public)
        return

    assert p256.verify(p256.decode_point(public), signature, message) is False
    assert theirs(other, signature, message) is False


@pytest.mark.parametrize(
    "change",
    [
        lambda r, s: (0, s),
        lambda r, s: (r, 0),
        lambda r, s: (N, s),
        lambda r, s: (r, N),
        lambda r, s: (r + N, s),  # the same r modulo n, but out of range
        lambda r, s: (r, s + N),
        lambda r, s: (2**256 - 1, s),
        lambda r, s: (r, 2**264),
    ],
)
def test_r_or_s_out_of_range_fails(change: Callable[[int, int], tuple[int, int]]) -> None:
    key = private(12345)
    signature = key.sign(b"range", ec.ECDSA(hashes.SHA256()))
    r, s = change(*decode_dss_signature(signature))
    changed = encode_dss_signature(r, s)

    assert ours(key.public_key(), changed, b"range") is False
    assert theirs(key.public_key(), changed, b"range") is False


def test_a_high_s_verifies_as_with_cryptography() -> None:
    key = private(54321)
    r, s = decode_dss_signature(key.sign(b"high", ec.ECDSA(hashes.SHA256())))
    high = encode_dss_signature(r, N - s)

    assert ours(key.public_key(), high, b"high") is True
    assert theirs(key.public_key(), high, b"high") is True


def _integer(contents: bytes) -> bytes:
    return der(0x02, contents)


def _non_canonical(signature: bytes) -> list[bytes]:
    """The same (r, s) written in ways strict DER forbids, and near misses."""
    r, s = decode_dss_signature(signature)
    r_bytes, s_bytes = (v.to_bytes((v.bit_length() + 8) // 8, "big") for v in (r, s))
    body = _integer(r_bytes) + _integer(s_bytes)
    return [
        signature + b"\x00",  # trailing byte
        b"\x30\x81" + bytes([len(body)]) + body,  # long length form for a short length
        der(0x30, _integer(b"\x00" + r_bytes) + _integer(s_bytes)),  # padded r
        der(0x30, _integer(r_bytes) + _integer(b"\x00" + s_bytes)),  # padded s
        der(0x31, body),  # a SET, not a SEQUENCE
        der(0x30, der(0x03, r_bytes) + _integer(s_bytes)),  # r not an INTEGER
        der(0x30, body + _integer(b"\x01")),  # three INTEGERs
        der(0x30, _integer(r_bytes)),  # one INTEGER
        der(0x30, body)[:-1],  # cut short
        der(0x30, b"\x02\x00" + _integer(s_bytes)),  # empty INTEGER
        der(0x30, _integer(r_bytes[1:]) + _integer(s_bytes)),  # r unpadded: negative
        der(0x30, _integer(r_bytes) + _integer(s_bytes[1:])),  # s unpadded: negative
        b"\x30" + bytes([len(body) + 1]) + body,  # length longer than the contents
        b"",
        b"\x30",
    ]


def test_non_canonical_der_fails_as_with_cryptography() -> None:
    key = private(777)
    # An r and an s with the top bit set: DER needs a 00 before each (else it is negative).
    signature = next(
        signature
        for signature in iter(lambda: key.sign(b"der", ec.ECDSA(hashes.SHA256())), None)
        if min(v.bit_length() for v in decode_dss_signature(signature)) == 256
    )
    assert ours(key.public_key(), signature, b"der") is True

    for changed in _non_canonical(signature):
        assert ours(key.public_key(), changed, b"der") is False, changed.hex()
        assert theirs(key.public_key(), changed, b"der") is False, changed.hex()


@settings(max_examples=100, deadline=None)
@given(r=st.integers(0, 2**264), s=st.integers(0, 2**264))
def test_der_signatures_decode_as_cryptography_writes_them(r: int, s: int) -> None:
    assert p256.decode_signature(encode_dss_signature(r, s)) == (r, s)


def test_a_signature_whose_point_is_infinity_fails() -> None:
    """u1*G + u2*Q = O when e = -r*d (mod n): any s then gives the point at infinity."""
    secret, message = 99, b"infinity"
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    r = -e * pow(secret, -1, N) % N
    signature = encode_dss_signature(r, 1)
    key = private(secret).public_key()

    assert ours(key, signature, message) is False
    assert theirs(key, signature, message) is False


def test_r_is_compared_with_x_modulo_n() -> None:
    """A point R with x >= n: the signature's r is x - n (a key made to fit it)."""
    x = next(x for x in range(N, P) if pow((x**3 - 3 * x + p256.B) % P, (P - 1) // 2, P) == 1)
    y = pow((x**3 - 3 * x + p256.B) % P, (P + 1) // 4, P)
    message, s = b"x mod n", 5
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    r = x - N
    u1, u2 = e * pow(s, -1, N) % N, r * pow(s, -1, N) % N
    # Q = (R - u1*G) / u2 = u2^-1 * R + (-u1 * u2^-1) * G
    q = p256._combination(-u1 * pow(u2, -1, N) % N, pow(u2, -1, N), p256.PublicKey(x, y))
    assert q is not None
    key = ec.EllipticCurvePublicNumbers(*q, ec.SECP256R1()).public_key()

    assert ours(key, encode_dss_signature(r, s), message) is True
    assert theirs(key, encode_dss_signature(r, s), message) is True
    assert ours(key, encode_dss_signature(x, s), message) is False  # x itself is >= n


@pytest.mark.parametrize("secret", [1, 2, N - 1, N - 2])
def test_keys_at_the_edges_verify(secret: int) -> None:
    """Q = G and Q = -G: the table of Shamir's trick holds 2G and the point at infinity."""
    key = private(secret)
    signature = key.sign(b"edge", ec.ECDSA(hashes.SHA256()))

    assert ours(key.public_key(), signature, b"edge") is True


@FEW
@given(secret=SECRETS)
def test_compressed_and_uncompressed_keys_are_the_same_point(secret: int) -> None:
    public = private(secret).public_key()
    numbers = public.public_numbers()
    expected = p256.PublicKey(numbers.x, numbers.y)

    assert p256.decode_point(point_bytes(public)) == expected
    assert p256.decode_point(point_bytes(public, compressed=True)) == expected
    compressed_spki = spki(point_bytes(public, compressed=True))
    loaded = serialization.load_der_public_key(compressed_spki)
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    assert loaded.public_numbers() == numbers
    curve, point = p256.public_key_info(compressed_spki)
    assert (curve, p256.decode_point(point)) == ("secp256r1", expected)
    uncompressed_spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert p256.public_key_info(uncompressed_spki) == ("secp256r1", point_bytes(public))


@FEW
@given(x=st.integers(0, 2**256 - 1), odd=st.booleans())
def test_compressed_points_are_accepted_as_cryptography_accepts_them(x: int, odd: bool) -> None:
    encoded = bytes([3 if odd else 2]) + x.to_bytes(32, "big")
    try:
        numbers = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), encoded
        ).public_numbers()
    except ValueError:
        with pytest.raises(ValueError, match="not on secp256r1"):
            p256.decode_point(encoded)
    else:
        assert p256.decode_point(encoded) == (numbers.x, numbers.y)


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"\x00", "the point at infinity"),
        (b"\x04" + bytes(64), "not on secp256r1"),
        (b"\x04" + p256.GX.to_bytes(32, "big") + (p256.GY + 1).to_bytes(32, "big"), "not on"),
        (b"\x04" + (p256.GX + P).to_bytes(33, "big")[1:] + p256.GY.to_bytes(32, "big"), "not on"),
        (b"\x02" + P.to_bytes(32, "big"), "not on secp256r1"),  # x = p: out of the field
        (b"\x06" + p256.GX.to_bytes(32, "big") + p256.GY.to_bytes(32, "big"), "not a point"),
        (b"\x04" + p256.GX.to_bytes(32, "big"), "not a point"),
        (b"", "not a point"),
    ],
)
def test_keys_that_are_no_point_are_refused(encoded: bytes, message: str) -> None:
    with pytest.raises(ValueError, match="not an EC public key") as caught:
        p256.decode_point(encoded)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("curve", "name"),
    [
        (ec.SECP384R1(), "secp384r1"),
        (ec.SECP521R1(), "secp521r1"),
        (ec.SECP256K1(), "secp256k1"),
        (ec.BrainpoolP256R1(), "brainpoolP256r1"),
    ],
)
def test_keys_on_other_curves_are_named(curve: ec.EllipticCurve, name: str) -> None:
    public = ec.generate_private_key(curve).public_key()
    encoded = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert p256.public_key_info(encoded) == (name, point_bytes(public))


def test_keys_that_are_not_ec_or_not_der_are_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    ed_key = ed25519.Ed25519PrivateKey.generate().public_key()
    good = spki(point_bytes(private(5).public_key()))
    cases = {
        "not an EC public key but an RSA key": rsa_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "not an EC public key but an Ed25519 key": ed_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "curve not known here (OID 1.2.3.4)": spki(point_bytes(private(5).public_key()), "1.2.3.4"),
        "by parameters, not by name": der(
            0x30,
            der(0x30, oid("1.2.840.10045.2.1") + der(0x30, _integer(b"\x01")))
            + der(0x03, b"\x00" + point_bytes(private(5).public_key())),
        ),
        "not a DER SubjectPublicKeyInfo (bytes after it)": good + b"\x00",
        "(bytes after the curve's name)": der(
            0x30,
            der(0x30, oid("1.2.840.10045.2.1") + oid("1.2.840.10045.3.1.7") + b"\x05\x00")
            + der(0x03, b"\x00" + point_bytes(private(5).public_key())),
        ),
        # 1.2.840.10045.3.1.7 with a 0x80 before 840: the same arcs, not in DER.
        "(DER OBJECT IDENTIFIER not in its shortest form)": der(
            0x30,
            der(0x30, oid("1.2.840.10045.2.1") + der(0x06, bytes.fromhex("2a808648ce3d030107")))
            + der(0x03, b"\x00" + point_bytes(private(5).public_key())),
        ),
        "not a DER SubjectPublicKeyInfo (DER element at byte 2 runs past": good[:-1],
        "key bits are not whole bytes": good[:-66] + b"\x01" + good[-65:],
    }
    for message, encoded in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            p256.public_key_info(encoded)
    with pytest.raises(ValueError, match="not a DER SubjectPublicKeyInfo"):
        p256.public_key_info(b"\x00")


def test_the_real_lem_record_verifies() -> None:
    """A real meter's record; its s is high (above n/2), which OpenSSL accepts too."""
    vector = json.loads(REAL_RECORD_FILE.read_text())
    record = parse_ocmf(vector["ocmf"])
    curve, point = p256.public_key_info(bytes.fromhex(vector["public_key_ocmf_hex"]))
    signature = bytes.fromhex(record.signature_hex)
    message = record.payload_text.encode("utf-8")

    assert curve == "secp256r1"
    assert decode_dss_signature(signature)[1] > N // 2
    assert p256.verify(p256.decode_point(point), signature, message) is True
    assert p256.verify(p256.decode_point(point), signature, message + b" ") is False
