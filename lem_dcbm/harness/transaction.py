"""The ``TransactionReq`` EvseManager sends, as the demo, the tests and the bench send it."""

from __future__ import annotations

from lem_dcbm.json_types import JsonObject


def transaction_request(transaction_id: str, *, evse_id: str = "DE*LEM*E0001") -> JsonObject:
    """A ``powermeter/TransactionReq`` for ``transaction_id`` with an RFID identification."""
    return {
        "evse_id": evse_id,
        "transaction_id": transaction_id,
        "identification_status": "ASSIGNED",
        "identification_type": "ISO14443",
        "identification_flags": ["RFID_PLAIN"],
        "identification_data": "04A2B3C4D5E6F7",
    }
