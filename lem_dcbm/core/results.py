"""What a start or stop command achieved, as values; the EVerest adapter shapes the answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A signed OCMF record exactly as the meter sent it, with the key that verifies it."""

    ocmf: str
    public_key_ocmf: str


@dataclass(frozen=True, slots=True)
class StartResult:
    """The outcome of a start: the stop-time window, or why it failed."""

    #: Why the start failed; None when it succeeded.
    error: str | None = None
    #: The earliest stop the meter accepts (its minimum transaction duration).
    min_stop_time: datetime | None = None
    #: The latest stop before the meter's time sync expires.
    max_stop_time: datetime | None = None
    #: The signed begin record, when asked for and available.
    begin_record: SignedRecord | None = None

    @property
    def ok(self) -> bool:
        """True when the transaction runs at the meter."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class StopResult:
    """The outcome of a stop: the signed record, or why there is none."""

    #: Why the stop has no record; None when it succeeded.
    error: str | None = None
    record: SignedRecord | None = None

    @property
    def ok(self) -> bool:
        """True when the record is there."""
        return self.error is None
