"""Building and signing OCMF records shaped like the LEM DCBM's own.

A record is ``OCMF|{payload}|{"SA": "ECDSA-secp256r1-SHA256", "SD": "<hex DER>"}``; the
signature covers the payload bytes exactly as sent. Field order and presence follow a
real record of firmware MU-2.3.0.1: no ``MM``, ``UC`` on the first reading only, later
readings inheriting ``TM``/``TX``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

_LOGGER = logging.getLogger(__name__)

SIGNATURE_ALGORITHM = "ECDSA-secp256r1-SHA256"
OBIS_IMPORT = "1-0:1.8.0"
OBIS_EXPORT = "1-0:2.8.0"

#: OCMF identification type names by LEM's ``ocmfId.IT`` number (0..17).
IDENTIFICATION_TYPES: tuple[str, ...] = (
    "NONE",
    "DENIED",
    "UNDEFINED",
    "ISO14443",
    "ISO15693",
    "EMAID",
    "EVCCID",
    "EVCOID",
    "ISO7812",
    "CARD_TXN_NR",
    "CENTRAL",
    "CENTRAL_1",
    "CENTRAL_2",
    "LOCAL",
    "LOCAL_1",
    "LOCAL_2",
    "PHONE_NUMBER",
    "KEY_CODE",
)

#: Static identification flags as the real meter reports them.
IDENTIFICATION_FLAGS: tuple[str, ...] = ("RFID_NONE", "OCPP_RS_TLS", "ISO15118_NONE", "PLMN_NONE")


@dataclass(frozen=True, slots=True)
class OcmfReading:
    """One reading moment: the OCMF ``TM`` text and both energy registers (kWh)."""

    time: str
    import_kwh: float
    export_kwh: float


@dataclass(frozen=True, slots=True)
class CableCompensation:
    """The cable loss compensation table entry selected by ``cableId`` (OCMF ``UC``)."""

    name: str
    ident: int
    resistance: int


@dataclass(frozen=True, slots=True)
class OcmfContent:
    """Everything one transaction's record says; ``end`` is None while it runs."""

    meter_id: str
    firmware: str
    pagination: int
    identification_type: int
    identification: str
    tariff_text: str
    evse_id: str
    cable: CableCompensation
    begin: OcmfReading
    end: OcmfReading | None
    end_state: str = "G"


def identification_type_name(number: int) -> str:
    """The OCMF name of LEM's identification type number (UNDEFINED when out of range)."""
    if 0 <= number < len(IDENTIFICATION_TYPES):
        return IDENTIFICATION_TYPES[number]
    return "UNDEFINED"


def _kwh(value: float) -> float:
    return round(value, 3)


def build_payload(content: OcmfContent) -> str:
    """The compact payload JSON of a record, in the real meter's field order."""
    payload: dict[str, Any] = {
        "FV": "1.0",
        "GI": "LEM DCBM",
        "GS": content.meter_id,
        "GV": "v1",
        "PG": f"T{content.pagination}",
        "MV": "LEM",
        "MS": content.meter_id,
        "MF": content.firmware,
        "IS": True,
        "IL": "TRUSTED",
        "IF": list(IDENTIFICATION_FLAGS),
        "IT": identification_type_name(content.identification_type),
        "ID": content.identification,
    }
    if content.tariff_text:
        payload["TT"] = content.tariff_text
    payload["CT"] = "EVSEID"
    payload["CI"] = content.evse_id
    readings: list[dict[str, Any]] = [
        {
            "TM": content.begin.time,
            "TX": "B",
            "RV": _kwh(content.begin.import_kwh),
            "RI": OBIS_IMPORT,
            "RU": "kWh",
            "RT": "DC",
            "EF": "",
            "ST": "G",
            "UC": {
                "UN": content.cable.name,
                "UI": content.cable.ident,
                "UR": content.cable.resistance,
            },
        },
        {"RV": _kwh(content.begin.export_kwh), "RI": OBIS_EXPORT, "RU": "kWh", "ST": "G"},
    ]
    if content.end is not None:
        readings += [
            {
                "TM": content.end.time,
                "TX": "E",
                "RV": _kwh(content.end.import_kwh),
                "RI": OBIS_IMPORT,
                "RU": "kWh",
                "ST": content.end_state,
            },
            {
                "RV": _kwh(content.end.export_kwh),
                "RI": OBIS_EXPORT,
                "RU": "kWh",
                "ST": content.end_state,
            },
        ]
    payload["RD"] = readings
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class OcmfSigner:
    """Signs OCMF payloads with one ECDSA secp256r1 key and publishes its public forms."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"the OCMF key must be secp256r1, not {key.curve.name}")
        self._key = key

    @classmethod
    def generate(cls) -> OcmfSigner:
        """A signer with a fresh key."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, path: Path | None) -> OcmfSigner:
        """Load the PEM key at ``path``; when it is absent, generate one and store it there."""
        if path is None:
            return cls.generate()
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path} does not hold an EC private key")
            return cls(key)
        signer = cls.generate()
        path.write_bytes(
            signer._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(path, 0o600)
        _LOGGER.info("generated a new OCMF signing key at %s", path)
        return signer

    @property
    def public_key_ocmf(self) -> str:
        """Hex (upper case) DER SubjectPublicKeyInfo, as ``status.publicKeyOcmf``."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return der.hex().upper()

    @property
    def public_key_raw(self) -> str:
        """Hex (upper case) of the bare point X||Y, as ``status.publicKey``."""
        point = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return point[1:].hex().upper()

    def sign(self, data: bytes) -> str:
        """Hex (upper case) DER ECDSA/SHA-256 signature of ``data``."""
        return self._key.sign(data, ec.ECDSA(hashes.SHA256())).hex().upper()

    def record(self, payload: str) -> str:
        """The full ``OCMF|payload|signature`` record for ``payload``."""
        signature = {"SA": SIGNATURE_ALGORITHM, "SD": self.sign(payload.encode("utf-8"))}
        return f"OCMF|{payload}|{json.dumps(signature, separators=(',', ':'))}"


_FIRST_READING_VALUE = re.compile(r'("RV":\d*)(\d)')


def tamper_record(record: str) -> str:
    """Change the last digit of the first energy value, leaving the signature as it was."""

    def bump(match: re.Match[str]) -> str:
        return match.group(1) + str((int(match.group(2)) + 1) % 10)

    return _FIRST_READING_VALUE.sub(bump, record, count=1)
