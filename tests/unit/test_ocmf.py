"""OCMF records: splitting on the exact payload text and verifying the real LEM test vector."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from lem_dcbm.ocmf import load_public_key, parse_ocmf, verify_ocmf

VECTOR = Path(__file__).resolve().parents[1] / "fixtures" / "ocmf" / "lem-real-record.json"


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR.read_text())
    return data


def sign(payload_text: str, key: ec.EllipticCurvePrivateKey) -> str:
    signature = key.sign(payload_text.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    return f'OCMF|{payload_text}|{{"SA":"ECDSA-secp256r1-SHA256","SD":"{signature.hex().upper()}"}}'


def key_hex(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der.hex().upper()


def test_real_lem_record_parses(vector: dict[str, Any]) -> None:
    record = parse_ocmf(vector["ocmf"])

    assert record.signature_algorithm == "ECDSA-secp256r1-SHA256"
    assert record.signature_hex.startswith("304502202FFD57")
    assert vector["ocmf"] == f"OCMF|{record.payload_text}|" + vector["ocmf"].rsplit("|", 1)[1]
    assert record.payload["GI"] == "LEM DCBM"
    assert [reading.get("TX") for reading in record.payload["RD"]] == ["B", None, "E", None]


@pytest.mark.parametrize("key_field", ["public_key_ocmf_hex", "public_key_ocmf_base64"])
def test_real_lem_record_verifies(vector: dict[str, Any], key_field: str) -> None:
    assert verify_ocmf(vector["ocmf"], vector[key_field]) is True


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"RV":1328.281', '"RV":1338.281'),  # end energy
        ('"CI":"FR*A23*E45B*78D"', '"CI":"FR*A23*E45B*78E"'),  # EVSE
        ('"FV":"1.0",', '"FV":"1.0", '),  # one blank: the signature is over exact bytes
        ("9EFBC0AD", "9EFBC0AE"),  # signature itself
    ],
)
def test_tampered_real_record_does_not_verify(vector: dict[str, Any], old: str, new: str) -> None:
    assert old in vector["ocmf"]
    tampered = vector["ocmf"].replace(old, new)
    assert verify_ocmf(tampered, vector["public_key_ocmf_hex"]) is False


def test_another_key_does_not_verify(vector: dict[str, Any]) -> None:
    other = key_hex(ec.generate_private_key(ec.SECP256R1()))
    assert verify_ocmf(vector["ocmf"], other) is False


def test_pipe_inside_the_payload_does_not_cut_it() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = '{"FV":"1.0","CI":"A|B","RD":[{"TX":"B","RV":1.0}]}'
    text = sign(payload, key)

    record = parse_ocmf(text)

    assert record.payload_text == payload
    assert record.payload["CI"] == "A|B"
    assert verify_ocmf(text, key_hex(key)) is True


def test_keys_in_pem_base64_and_bare_point_forms_load() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    text = sign('{"FV":"1.0"}', key)

    for form in (der.hex(), base64.b64encode(der).decode(), pem.decode(), point.hex()):
        assert load_public_key(form).public_numbers() == public.public_numbers()
        assert verify_ocmf(text, form) is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"FV":"1.0"}', "does not start with 'OCMF|'"),
        ("OCMF|{not json}|{}", "payload is not valid JSON"),
        ('OCMF|["FV"]|{"SD":"00"}', "payload is not a JSON object"),
        ('OCMF|{"FV":"1.0"}', "not followed by '|'"),
        ('OCMF|{"FV":"1.0"}|{"SA":"ECDSA-secp256r1-SHA256"}', "'SD' is missing"),
        ('OCMF|{"FV":"1.0"}|{"SD":"zz"}', "'SD' is not hex"),
        ('OCMF|{"FV":"1.0"}|{"SD":"00"} trailing', "unexpected text after"),
    ],
)
def test_malformed_records_raise_clear_value_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="OCMF|ocmf") as caught:
        parse_ocmf(text)
    assert message in str(caught.value)


def test_missing_sa_defaults_to_secp256r1() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = sign('{"FV":"1.0"}', key).replace('"SA":"ECDSA-secp256r1-SHA256",', "")
    assert parse_ocmf(text).signature_algorithm == "ECDSA-secp256r1-SHA256"
    assert verify_ocmf(text, key_hex(key)) is True


def test_unsupported_algorithm_and_wrong_curve_are_errors_not_false() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = sign('{"FV":"1.0"}', key)
    with pytest.raises(ValueError, match="unsupported OCMF signature algorithm"):
        verify_ocmf(text.replace("secp256r1", "secp384r1"), key_hex(key))
    other_curve = key_hex(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="secp384r1"):
        verify_ocmf(text, other_curve)
    with pytest.raises(ValueError, match="neither hex nor base64"):
        verify_ocmf(text, "not a key!")


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1(), ec.SECP256K1()])
def test_a_key_on_another_curve_is_named_in_the_error(curve: ec.EllipticCurve) -> None:
    text = sign('{"FV":"1.0"}', ec.generate_private_key(ec.SECP256R1()))
    pem = (
        ec.generate_private_key(curve)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    needs = f"public key is on {curve.name}, the record needs secp256r1"

    with pytest.raises(ValueError, match=needs):
        verify_ocmf(text, pem)
    with pytest.raises(ValueError, match="holds 'EC PUBLIC KEY', not one 'PUBLIC KEY' block"):
        verify_ocmf(text, pem.replace("PUBLIC KEY", "EC PUBLIC KEY"))


def _cryptography_verdict(text: str, key: ec.EllipticCurvePrivateKey) -> bool:
    """The verdict of cryptography (OpenSSL) on ``text``, which ``lem_dcbm.p256`` replaces."""
    record = parse_ocmf(text)
    try:
        key.public_key().verify(
            bytes.fromhex(record.signature_hex),
            record.payload_text.encode("utf-8"),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        return False
    return True


def _with_signature(text: str, signature: bytes) -> str:
    payload = parse_ocmf(text).payload_text
    return f'OCMF|{payload}|{{"SA":"ECDSA-secp256r1-SHA256","SD":"{signature.hex().upper()}"}}'


@settings(max_examples=150, deadline=None)
@given(
    payload=st.text(max_size=40),
    change=st.sampled_from(["none", "payload", "flip", "truncate", "append", "random", "high_s"]),
    where=st.integers(0, 200),
    noise=st.binary(min_size=1, max_size=80),
)
def test_verdicts_equal_cryptographys(payload: str, change: str, where: int, noise: bytes) -> None:
    """Genuine, tampered, truncated, padded, random and high-S signatures alike."""
    key = ec.generate_private_key(ec.SECP256R1())
    text = sign(json.dumps({"FV": "1.0", "CI": payload}), key)
    signature = bytes.fromhex(parse_ocmf(text).signature_hex)
    if change == "payload":
        text = text.replace('"FV":"1.0"', '"FV":"1.1"', 1).replace('"1.0"', '"1.1"', 1)
    elif change == "flip":
        at = where % len(signature)
        text = _with_signature(
            text, signature[:at] + bytes([signature[at] ^ 1]) + signature[at + 1 :]
        )
    elif change == "truncate":
        text = _with_signature(text, signature[: where % len(signature)] or b"\x30")
    elif change == "append":
        text = _with_signature(text, signature + noise)
    elif change == "random":
        text = _with_signature(text, noise)
    elif change == "high_s":
        r, s = decode_dss_signature(signature)
        text = _with_signature(text, encode_dss_signature(r, SECP256R1_ORDER - s))
    assert verify_ocmf(text, key_hex(key)) is _cryptography_verdict(text, key)


SECP256R1_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_a_key_that_is_not_ec_is_an_error_not_false() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = rsa_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = sign('{"FV":"1.0"}', ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="not an EC public key"):
        verify_ocmf(text, der.hex())
    with pytest.raises(ValueError, match="not an EC public key"):
        verify_ocmf(text, "04" + "00" * 64)  # a bare point that is not on the curve


def test_a_running_module_verifies_without_cryptography() -> None:
    """The verifier loads at the first verification; cryptography and ecdsa never do."""
    code = (
        "import sys, json\n"
        "import lem_dcbm.cli, lem_dcbm.service\n"
        "from lem_dcbm.ocmf import verify_ocmf\n"
        "assert 'lem_dcbm.p256' not in sys.modules, 'the verifier loaded before a verification'\n"
        f"vector = json.loads(open({str(VECTOR)!r}).read())\n"
        "assert verify_ocmf(vector['ocmf'], vector['public_key_ocmf_hex'])\n"
        "assert 'lem_dcbm.p256' in sys.modules\n"
        "assert 'cryptography' not in sys.modules, 'cryptography loaded'\n"
        "assert 'ecdsa' not in sys.modules, 'ecdsa loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
