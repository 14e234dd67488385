"""What reached the CSMS for one transaction: its bill, and one line per scenario run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from lem_dcbm.ocmf import verify_ocmf
from lem_dcbm.records.checks import same_session
from tests.sil.csms import BEGIN_CONTEXT, END_CONTEXT, Csms, SignedValue

#: A file to which every scenario run appends its outcome as one JSON line.
RESULTS_ENV = "LEM_DCBM_SIL_RESULTS"


@dataclass
class Bill:
    """The signed values of one transaction as the CSMS got them."""

    transaction_id: str
    values: list[SignedValue]
    #: Signed values that came without a transaction, in OCPP 2.0.1's clock-aligned
    #: MeterValues of an idle EVSE, matched to this transaction by the meter session.
    idle: list[SignedValue] = field(default_factory=list)

    @property
    def begins(self) -> list[SignedValue]:
        """The signed values under ``Transaction.Begin``."""
        return [v for v in self.values if v.context == BEGIN_CONTEXT]

    @property
    def ends(self) -> list[SignedValue]:
        """The signed values under ``Transaction.End``."""
        return [v for v in self.values if v.context == END_CONTEXT]

    @property
    def start_verified(self) -> bool:
        """A start record arrived and every one of them verifies."""
        return bool(self.begins) and all(v.verified for v in self.begins)

    @property
    def stop_verified(self) -> bool:
        """A stop record arrived, verifies, and is of the same meter session as the start."""
        if not self.ends or not all(v.verified for v in self.ends):
            return False
        return all(same_session(b.record, e.record) for b in self.begins for e in self.ends)

    @property
    def stop_by_meter_values(self) -> bool:
        """A whole record of this meter session arrived verified in idle MeterValues."""
        return any(v.verified and v.kind == "whole" for v in self.idle)

    @property
    def stop_reached(self) -> bool:
        """The verified stop record is at the CSMS, by the Ended event or by MeterValues."""
        return self.stop_verified or self.stop_by_meter_values

    @property
    def unverified(self) -> list[SignedValue]:
        """Every signed value that does not verify (a wrong bill)."""
        return [v for v in self.values + self.idle if not v.verified]

    def describe(self) -> str:
        """``start+stop verified``, ``stop only``, ``start only``, ``none``, plus any bad value."""
        parts = {
            (True, True): "start+stop verified",
            (False, True): "stop verified, no start record",
            (True, False): "start verified, NO STOP RECORD",
            (False, False): "no signed value",
        }[(self.start_verified, self.stop_verified)]
        if self.stop_by_meter_values and not self.stop_verified:
            parts = parts.replace("NO STOP RECORD", "stop verified")
            parts += " (the stop record by clock-aligned MeterValues)"
        if self.unverified:
            parts += f"; {len(self.unverified)} NOT VERIFIED"
        return parts


def bills(csms: Csms) -> list[Bill]:
    """One bill per OCPP transaction id, in the order the transactions began."""
    order: list[str] = []
    for message in csms.messages():
        if message.action == "TransactionEvent":
            tx = str((message.payload.get("transactionInfo") or {}).get("transactionId", ""))
            if tx and tx not in order:
                order.append(tx)
    values = csms.signed_values()
    for value in values:
        if value.transaction_id and value.transaction_id not in order:
            order.append(value.transaction_id)
    found = [Bill(tx, [v for v in values if v.transaction_id == tx]) for tx in order]
    for value in (v for v in values if not v.transaction_id):
        owner = next((b for b in found if b.begins and _of_session(b, value)), None)
        if owner is None:
            found.append(Bill("", [], idle=[value]))  # of no transaction the CSMS knows
        else:
            owner.idle.append(value)
    return found


def _of_session(bill: Bill, value: SignedValue) -> bool:
    return all(same_session(begin.record, value.record) for begin in bill.begins)


def ended(csms: Csms, count: int = 1) -> bool:
    """At least ``count`` transactions ended (2.0.1 Ended events, 1.6 StopTransactions)."""
    events = [e for e in csms.transaction_events() if e.get("eventType") == "Ended"]
    return len(events) + len(csms.messages("StopTransaction")) >= count


def started(csms: Csms, count: int = 1) -> bool:
    """At least ``count`` transactions started."""
    events = [e for e in csms.transaction_events() if e.get("eventType") == "Started"]
    return len(events) + len(csms.messages("StartTransaction")) >= count


def late_verified(records: dict[str, str], key: str) -> list[str]:
    """The late-road topics whose record verifies with the meter's key."""
    good = []
    for topic, text in records.items():
        try:
            record = json.loads(text)["signed_meter_value"]["signed_meter_data"]
            if record and verify_ocmf(record, key):
                good.append(topic)
        except (ValueError, KeyError, TypeError):
            continue
    return good


@dataclass
class Outcome:
    """One scenario run as the docs' table shows it."""

    scenario: str
    meter: str
    ocpp: str
    bills: list[str]
    late_road: int = 0
    notes: list[str] = field(default_factory=list)
    everest: str = ""
    date: str = field(
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    )

    def report(self) -> None:
        """Print one line (``-s``/``-rA``) and append it to ``$LEM_DCBM_SIL_RESULTS``."""
        print(f"\n[everest_sil] {json.dumps(asdict(self))}")
        path = os.environ.get(RESULTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(self)) + "\n")


def outcome(scenario: str, meter: str, ocpp: str, csms: Csms, **extra: Any) -> Outcome:
    """The outcome of a run from what the CSMS holds."""
    found = Outcome(scenario, meter, ocpp, [b.describe() for b in bills(csms)])
    for name, value in extra.items():
        setattr(found, name, value)
    return found
