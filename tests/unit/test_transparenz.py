"""The Transparenzsoftware's XML: records carried byte for byte, keys as hex, ids in comments."""

from __future__ import annotations

import base64
import sys
import warnings
import xml.etree.ElementTree as ET  # noqa: S405 - parses our own output
from dataclasses import replace
from pathlib import Path

import pytest

from lem_dcbm.journal import TransactionJournal
from lem_dcbm.records.export import TransactionReport, reports
from lem_dcbm.records.transparenz import public_key_hex, transparenz_xml
from lem_dcbm.simulator.ocmf_signer import OcmfSigner, build_payload
from tests.support.record_samples import CONTENT

SIGNER = OcmfSigner.generate()


def journal_rows(tmp_path: Path, records: dict[str, str], key: str) -> list[TransactionReport]:
    journal = TransactionJournal(tmp_path / "journal")
    for transaction_id, record in records.items():
        journal.record(transaction_id, "start_confirmed")
        journal.record(transaction_id, "ocmf_fetched", ocmf=record, public_key_ocmf=key)
    return reports(journal.entries())


def test_markup_in_a_record_is_escaped_and_comes_back_unchanged(tmp_path: Path) -> None:
    record = SIGNER.record(build_payload(replace(CONTENT, identification="a<b&c>\"d'")))
    rows = journal_rows(tmp_path, {"tx-1": record}, SIGNER.public_key_ocmf)

    text, skipped = transparenz_xml(rows)

    assert skipped == []
    value = ET.fromstring(text.encode()).find("value")  # noqa: S314 - our own output
    assert value is not None
    assert value.attrib == {"transactionId": "1", "context": "Transaction.End"}
    signed = value.find("signedData")
    assert signed is not None
    assert signed.attrib == {"format": "OCMF", "encoding": "plain"}
    assert signed.text == record
    key = value.find("publicKey")
    assert key is not None
    assert (key.attrib, key.text) == ({"encoding": "plain"}, SIGNER.public_key_ocmf)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="pyocmf needs Python 3.11")
def test_pyocmf_verifies_an_escaped_record(tmp_path: Path) -> None:
    import pyocmf

    record = SIGNER.record(build_payload(replace(CONTENT, identification="a<b&c>")))
    rows = journal_rows(tmp_path, {"t": record}, SIGNER.public_key_ocmf)
    path = tmp_path / "out.xml"
    path.write_text(transparenz_xml(rows)[0])

    with warnings.catch_warnings():  # pyocmf warns that the ID is no ISO 14443 UID
        warnings.simplefilter("ignore", pyocmf.SpecWarning)
        [entry] = pyocmf.OcmfContainer.from_xml(path)

    assert entry.verify_signature() is True


def test_records_xml_cannot_carry_are_left_out(tmp_path: Path) -> None:
    good = SIGNER.record(build_payload(CONTENT))
    rows = journal_rows(
        tmp_path,
        {"tx-cr": good.replace(",", ",\r\n", 1), "tx-ctl": good + "\x01", "tx-ok": good},
        SIGNER.public_key_ocmf,
    )

    text, skipped = transparenz_xml(rows)

    assert sorted(skipped) == ["tx-cr", "tx-ctl"]
    assert text.count("<value ") == 1
    assert 'transactionId="1"' in text


def test_a_key_kept_as_base64_is_written_as_hex() -> None:
    der = bytes.fromhex(SIGNER.public_key_ocmf)

    assert public_key_hex(base64.b64encode(der).decode()) == SIGNER.public_key_ocmf
    assert public_key_hex("") == ""
    assert public_key_hex("not a key") == ""


@pytest.mark.parametrize(
    ("transaction_id", "comment"),
    [
        ("tx-1", True),
        ("a--b", False),
        ("ends-", False),
        ("line\nbreak", False),
        ("Zähler", False),
    ],
)
def test_the_id_stands_in_a_comment_only_when_it_can(
    tmp_path: Path, transaction_id: str, comment: bool
) -> None:
    rows = journal_rows(tmp_path, {transaction_id: SIGNER.record(build_payload(CONTENT))}, "")

    text, _ = transparenz_xml(rows)

    assert ("<!--" in text) is comment
    ET.fromstring(text.encode())  # noqa: S314 - well-formed whatever the id
    assert "<publicKey" not in text  # no key kept, none written
