"""The meter's status and error bits, as the simulator's own table.

Written from the API description (``spec/lem-dcbm-api.md``: "status.value is a bit field
in the order of status.bits", the four bits that block a start, 17 for a healthy idle
meter) and from EVerest's helper for tests against a real meter (status 21 while a
transaction runs). Deliberately not imported from the client (``lem_dcbm.meter``): the
simulator stands for the meter, so a mistake in the client's tables must show up as a
disagreement, not be copied into both sides.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StatusBit:
    """One bit of ``status.value`` and what a transaction start needs of it."""

    #: Bit number in ``status.value`` (0 is the least significant).
    position: int
    #: The key in ``status.bits``, spelled as the meter spells it.
    name: str
    #: The value a start requires; None for an indicator that does not block starts.
    start_needs: bool | None = None
    #: Why a start is refused when the bit is not ``start_needs``.
    refusal: str = ""

    @property
    def mask(self) -> int:
        """The bit's value in ``status.value``."""
        return 1 << self.position


#: ``status.bits`` in ``status.value`` order; bits 0, 1, 2 and 4 block new transactions.
STATUS_TABLE: tuple[StatusBit, ...] = (
    StatusBit(0, "suLinkStatusIsOk", True, "the sensor link is not ok"),
    StatusBit(1, "muFatalErrorOccured", False, "a fatal error occurred"),
    StatusBit(2, "transactionIsOnGoing", False, "a transaction is already running"),
    StatusBit(3, "tamperingIsDetected"),
    StatusBit(4, "timeSyncStatusIsOk", True, "the time synchronisation is not valid"),
    StatusBit(5, "overTemperatureIsDetected"),
    # Cleared only by a restart.
    StatusBit(6, "reversedVoltage"),
    StatusBit(7, "suMeasureFailureOccurred"),
)

#: ``errors.bits`` in ``errors.value`` order. The description lists them in this order
#: without numbering them; bit 0 first, as for the status, is an assumption.
ERROR_NAMES: tuple[str, ...] = (
    "muInitIsFailed",
    "suStateIsInvalid",
    "versionCheckIsFailed",
    "muRngInitIsFailed",
    "muDataIntegrityIsFailed",
    "muFwIntegrityIsFailed",
    "suIntegrityIsFailed",
    "logbookIntegrityIsFailed",
    "logbookIsFull",
    "memoryAccessIsFailed",
    "muStateIsFailed",
)

STATUS_NAMES: tuple[str, ...] = tuple(bit.name for bit in STATUS_TABLE)
#: Bit name -> its value in ``status.value``.
BIT: dict[str, int] = {bit.name: bit.mask for bit in STATUS_TABLE}
#: Start preconditions in the order the meter checks them (bit order).
PRECONDITIONS: tuple[StatusBit, ...] = tuple(b for b in STATUS_TABLE if b.start_needs is not None)

#: ``status.value`` of a healthy idle meter (operation manual) ...
IDLE_STATUS = 17
#: ... and of one in a transaction (EVerest's real-meter test helper waits for 21).
IN_TRANSACTION_STATUS = 21
#: A stopped transaction's ``transactionStatus`` that means billable.
BILLABLE_STATUS = 17
