"""Records as the S.A.F.E. Transparenzsoftware reads them: one XML file with the meter's key.

Customers and calibration authorities check a bill with the Transparenzsoftware. It reads
a ``<values>`` file in which each ``<value>`` holds one signed record
(``<signedData format="OCMF" encoding="plain">``) and the key that verifies it
(``<publicKey encoding="plain">``: the hex text of the DER SubjectPublicKeyInfo, which is
what the meter's ``publicKeyOcmf`` is; the Transparenzsoftware decodes ``plain`` keys as
hex and refuses ``hex``). ``transactionId`` is a number that groups a transaction's
values and names the value in its tree; ``context`` says whether a value is the begin or
the end of a transaction. A LEM record holds both the begin and the end reading, so each
transaction is one value, numbered from 1 in file order, with the context
``Transaction.End``: the record the meter signed at the stop.

Pure: the caller chooses the transactions and which of them may be written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from cryptography.hazmat.primitives import serialization

from lem_dcbm.ocmf import load_public_key
from lem_dcbm.records.export import TransactionReport

#: ``context`` of the one value per transaction (the Transparenzsoftware's name).
CONTEXT_END = "Transaction.End"
#: ``format`` of ``signedData`` for OCMF records.
FORMAT_OCMF = "OCMF"
#: ``encoding`` of ``signedData`` and ``publicKey``: the text as it is (a key in hex).
ENCODING_PLAIN = "plain"


#: Text an XML file cannot carry unchanged: characters XML 1.0 forbids, and a carriage
#: return (a reader turns it into a line feed, and the signature would no longer verify).
_UNWRITABLE = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def transparenz_xml(rows: Sequence[TransactionReport]) -> tuple[str, list[str]]:
    """The XML file of every row that holds a record, in order, numbered from 1.

    Also the ids of the records left out because XML cannot carry them byte for byte
    (control characters, a carriage return, white space at either end).
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<values>"]
    skipped = []
    number = 0
    for report in rows:
        if report.kept is None:
            continue
        record = report.kept.ocmf
        if _UNWRITABLE.search(record) or record != record.strip():
            skipped.append(report.transaction_id)
            continue
        number += 1
        comment = _comment(report.transaction_id)
        if comment:
            lines.append(f"  {comment}")
        lines.append(
            f"  <value transactionId={quoteattr(str(number))} context={quoteattr(CONTEXT_END)}>"
        )
        # No white space around the record: the signature covers its bytes exactly.
        lines.append(
            f"    <signedData format={quoteattr(FORMAT_OCMF)} "
            f"encoding={quoteattr(ENCODING_PLAIN)}>{escape(record)}</signedData>"
        )
        key = public_key_hex(report.kept.public_key_ocmf)
        if key:
            lines.append(f"    <publicKey encoding={quoteattr(ENCODING_PLAIN)}>{key}</publicKey>")
        lines.append("  </value>")
    lines.append("</values>")
    return "\n".join(lines) + "\n", skipped


def public_key_hex(key: str) -> str:
    """The key as upper-case hex DER SubjectPublicKeyInfo; "" when there is none usable.

    The meter's ``publicKeyOcmf`` already is that; a key stored as base64, PEM or a bare
    point is brought to the same form, since the Transparenzsoftware reads only hex.
    """
    if not key:
        return ""
    try:
        loaded = load_public_key(key)
    except ValueError:
        return ""
    der = loaded.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der.hex().upper()


def _comment(transaction_id: str) -> str:
    """``<!-- transaction ID -->`` for the reader, when the id can stand in a comment."""
    printable = transaction_id.isprintable() and transaction_id.isascii()
    if not transaction_id or not printable or "--" in transaction_id:
        return ""
    if transaction_id.endswith("-"):
        return ""
    return f"<!-- transaction {transaction_id} -->"
