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
    def unverified(self) -> list[SignedValue]:
        """Every signed value that does not verify (a wrong bill)."""
        return [v for v in self.values if not v.verified]

    def describe(self) -> str:
        """``start+stop verified``, ``stop only``, ``start only``, ``none``, plus any bad value."""
        parts = {
            (True, True): "start+stop verified",
            (False, True): "stop verified, no start record",
            (True, False): "start verified, NO STOP RECORD",
            (False, False): "no signed value",
        }[(self.start_verified, self.stop_verified)]
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
    for value in csms.signed_values():
        if value.transaction_id not in order:
            order.append(value.transaction_id)
    values = csms.signed_values()
    return [Bill(tx, [v for v in values if v.transaction_id == tx]) for tx in order]


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
