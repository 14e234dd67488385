"""Whose transaction runs at the meter: one this module may stop, or somebody else's.

A meter can end up configured in two modules (a copy-pasted config block, two EVSEs
pointed at one address), or run a transaction a tool or another driver started. Stopping
such a transaction ends another customer's session and bills it where its EvseManager
never looks. So a transaction this module did not ask for by id is stopped only when it is
provably this module's:

- the journal holds it, started and not finished, for this meter (and, where the journal
  kept it, for the evseId the meter reports); or
- the journal lost it (a disk replaced) but it was started for this same EVSE: the meter's
  ``evseId`` equals the new request's and is not empty, its ``clientId`` has the form this
  module sends (``identification,transaction id``), and no other module claims the meter.

Anything else is foreign: the start is refused and names it. Its owner stops it, or the
operator does, by name, with ``lem-dcbm meter stop-foreign``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lem_dcbm.core.transaction_request import MAX_ID_BYTES, utf8_len

#: Raised (as ``VendorError``) while a foreign transaction blocks this EVSE's starts.
FOREIGN_TRANSACTION = "ForeignTransaction"


@dataclass(frozen=True, slots=True)
class RunningTransaction:
    """A transaction the meter runs, with what it was started with (None: not reported)."""

    transaction_id: str
    evse_id: str | None = None
    client_id: str | None = None

    def describe(self) -> str:
        """``transaction X (evseId 'E', clientId 'C')`` for logs and answers."""
        evse = "unknown" if self.evse_id is None else repr(self.evse_id)
        client = "unknown" if self.client_id is None else repr(self.client_id)
        return f"transaction {self.transaction_id} (evseId {evse}, clientId {client})"


def why_not_ours(
    running: RunningTransaction,
    *,
    held: Mapping[str, object] | None,
    evse_id: str | None,
    other_modules: tuple[str, ...],
) -> str | None:
    """Why this module may not stop ``running``; None when it provably may.

    ``held``: the journal's facts when it holds the transaction unfinished, else None.
    ``evse_id``: the EVSE of the request at hand (None: a stop without id names none).
    ``other_modules``: module ids that claim the same meter.
    """
    if held is not None:
        sent = held.get("evse_id")
        if isinstance(sent, str) and running.evse_id is not None and sent != running.evse_id:
            return (
                f"the journal holds an id {running.transaction_id} started for EVSE {sent!r}, "
                f"but the meter's was started for {running.evse_id!r}"
            )
        return None
    if evse_id is None:
        return "this module's journal does not hold it and a stop without id names no EVSE"
    if running.evse_id is None:
        return "this module's journal does not hold it and the meter does not say its EVSE"
    if not running.evse_id or running.evse_id != evse_id:
        return (
            f"this module's journal does not hold it and it was started for EVSE "
            f"{running.evse_id!r}, not this request's {evse_id!r}"
        )
    if running.client_id is not None and not _client_id_of_ours(
        running.client_id, running.transaction_id
    ):
        return (
            "this module's journal does not hold it and its clientId is not of the form "
            "this module sends (identification,transaction id)"
        )
    if other_modules:
        return (
            "this module's journal does not hold it and module(s) "
            f"{', '.join(other_modules)} also claim this meter"
        )
    return None


def _client_id_of_ours(client_id: str, transaction_id: str) -> bool:
    """The start body's ``clientId``: ``identification,transaction id``, cut to 37 bytes."""
    if client_id.endswith(f",{transaction_id}"):
        return True
    # Cut at a character boundary: the tail of the id is gone, only the length tells.
    return utf8_len(client_id) > MAX_ID_BYTES - 4
