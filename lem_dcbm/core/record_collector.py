"""Fetching a stopped transaction's signed record and judging it before it is billed.

A record is taken only when it is finished (it has its end reading) and is this
transaction's: read, from this meter, with the record number (``PG``) the transaction's
begin record carried and above every number the meter had given before the start
(``FOREIGN_CHECKS``). A record that fails any other check is still the meter's signed
truth: it is taken, and the failed checks are named in the log, the journal and a
vendor warning. A record whose signature does not verify is fetched once more first.

With ``record_identity_checks: report`` (for simulations and mocks only, which serve a
fixed record of another meter) a record failing those checks, or lacking its end reading,
is taken all the same, and the failed checks are named like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from lem_dcbm.clock import Clock
from lem_dcbm.core.ports import Alerts
from lem_dcbm.errors import LemDcbmError, MeterError, MeterStatusError
from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.records.checks import CheckFailure, RecordExpectation, RecordVerdict, check_record
from lem_dcbm.retry import RetryPolicy

_LOGGER = logging.getLogger(__name__)

#: Failed checks that show a record is not this transaction's: it is never billed for it.
FOREIGN_CHECKS = frozenset({"format", "meter", "pagination", "pagination_order"})
#: A failed check ``report`` mode names for a record without its end reading.
END_READING = "end_reading"
#: Failures ``report`` mode passes on that ``enforce`` would withhold.
IDENTITY_FAILURES = FOREIGN_CHECKS | {END_READING}
#: Vendor warning sub-types about records.
SIGNATURE_INVALID = "OcmfSignatureInvalid"
CHECK_FAILED = "OcmfCheckFailed"
#: Waiting for a record inside a stop: quick at first, then every 2 s.
RECORD_WAIT = RetryPolicy(attempts=None, first_delay_s=0.25, max_delay_s=2.0)
NOT_FOUND = 404

#: ``enforce`` withholds a record failing an identity check; ``report`` names the failures.
IdentityChecks = Literal["enforce", "report"]


@dataclass(frozen=True, slots=True)
class CollectedRecord:
    """A record taken for a transaction, with what its checks found."""

    record: str
    verdict: RecordVerdict

    def verdict_facts(self) -> dict[str, Any]:
        """The verdict as the journal keeps it."""
        return {
            "signature_valid": self.verdict.signature_valid,
            "failed_checks": [
                {"check": failure.check, "detail": failure.detail}
                for failure in self.verdict.failures
            ],
        }


class RecordMissing(LemDcbmError):
    """No usable record (yet); the message says why."""

    def __init__(self, reason: str, *, unknown: bool = False) -> None:
        super().__init__(reason)
        #: True when the meter says it holds no record under that id at all.
        self.unknown = unknown


class RecordSource(Protocol):
    """Where records come from: the meter, through the controller's session."""

    def ocmf(self, transaction_id: str) -> str: ...

    def ocmf_by_index(self, index: int) -> str: ...


class RecordCollector:
    """Fetches, checks and (within a deadline) waits for transaction records."""

    def __init__(
        self,
        meter: RecordSource,
        clock: Clock,
        public_key: Callable[[], str],
        *,
        alerts: Alerts | None = None,
        sleep: Callable[[float], None] | None = None,
        wait_policy: RetryPolicy = RECORD_WAIT,
        identity_checks: IdentityChecks = "enforce",
        slot_of: Callable[[str], int | None] | None = None,
    ) -> None:
        self._meter = meter
        self._clock = clock
        self._public_key = public_key
        self._alerts = alerts
        self._sleep = sleep or clock.sleep
        #: Only a missing record is waited for: another failure is no reason to wait.
        self._policy = replace(wait_policy, retryable=_missing)
        self._enforce = identity_checks == "enforce"
        self._slot_of = slot_of

    def attempt(self, transaction_id: str, expected: RecordExpectation) -> CollectedRecord:
        """One fetch, with one more right away if the signature fails; ``RecordMissing`` else."""
        collected = self._fetch_checked(transaction_id, expected)
        if collected.verdict.signature_valid is False:
            _LOGGER.warning("record of %s does not verify; fetching it once more", transaction_id)
            collected = self._fetch_checked(transaction_id, expected)
        self._report(transaction_id, collected.verdict)
        return collected

    def wait(
        self, transaction_id: str, expected: RecordExpectation, deadline: float
    ) -> CollectedRecord:
        """Try until a usable record comes or ``deadline`` (monotonic) would pass."""
        return self._policy.run(
            lambda: self.attempt(transaction_id, expected),
            what=f"fetch the record of {transaction_id}",
            sleep=self._sleep,
            monotonic=self._clock.monotonic,
            deadline=deadline,
        )

    def _fetch_checked(self, transaction_id: str, expected: RecordExpectation) -> CollectedRecord:
        try:
            record = self._meter.ocmf(transaction_id)
        except MeterStatusError as err:
            if err.status != NOT_FOUND:
                raise RecordMissing(str(err)) from err
            record = self._fetch_by_slot(transaction_id, expected, err)
        except MeterError as err:
            raise RecordMissing(str(err)) from err
        finished = has_end_reading(record)
        if not finished and self._enforce:
            raise RecordMissing("the meter's record has no end reading yet")
        verdict = check_record(record, expected, self._public_key() or None)
        if not finished and not any(f.check == "format" for f in verdict.failures):
            missing = CheckFailure(END_READING, "the record has no end reading (TX E)")
            verdict = RecordVerdict(verdict.signature_valid, (*verdict.failures, missing))
        self._refuse_if_foreign(
            verdict, f"the meter handed a record that is not {transaction_id}'s"
        )
        return CollectedRecord(record, verdict)

    def _fetch_by_slot(
        self, transaction_id: str, expected: RecordExpectation, not_found: MeterStatusError
    ) -> str:
        """The record from the ring slot the journal noted, when the lookup by id misses it.

        ``GET /ocmf?transactionId=`` searches only the last 840 transactions. The slot may
        hold a later transaction's record by now: only a known record number (``PG``) lets
        the checks tell, so without one the record stays missing.
        """
        slot = self._slot_of(transaction_id) if self._slot_of is not None else None
        if slot is None or expected.pagination is None:
            raise RecordMissing(str(not_found), unknown=True) from not_found
        _LOGGER.info(
            "record of %s beyond the meter's lookup by id (%s); reading ring slot %d",
            transaction_id,
            not_found,
            slot,
        )
        try:
            return self._meter.ocmf_by_index(slot)
        except MeterStatusError as err:
            raise RecordMissing(str(err), unknown=err.status == NOT_FOUND) from err
        except MeterError as err:
            raise RecordMissing(str(err)) from err

    def judge(self, record: str, expected: RecordExpectation) -> CollectedRecord:
        """Check a kept record again (no fetch); raise ``RecordMissing`` if it is foreign."""
        verdict = check_record(record, expected, self._public_key() or None)
        self._refuse_if_foreign(verdict, "the kept record is not this transaction's")
        return CollectedRecord(record, verdict)

    def _refuse_if_foreign(self, verdict: RecordVerdict, what: str) -> None:
        """Raise ``RecordMissing`` when enforcing and a failed check makes the record foreign."""
        foreign = [f for f in verdict.failures if f.check in FOREIGN_CHECKS]
        if foreign and self._enforce:
            details = "; ".join(f"{f.check}: {f.detail}" for f in foreign)
            _LOGGER.error("%s: %s", what, details)
            raise RecordMissing(f"{what} (another transaction's record: {details})")

    def _report(self, transaction_id: str, verdict: RecordVerdict) -> None:
        if verdict.signature_valid is False:
            message = (
                f"the signed record of transaction {transaction_id} does not verify with the "
                "meter's publicKeyOcmf; it is passed on unchanged (the meter is the authority)"
            )
            _LOGGER.error(message)
            self._alert(SIGNATURE_INVALID, message)
        else:
            self._clear(SIGNATURE_INVALID)
        content = [f for f in verdict.failures if f.check != "signature"]
        if content:
            named = "; ".join(f"{f.check}: {f.detail}" for f in content)
            message = f"the signed record of transaction {transaction_id} fails checks: {named}"
            if not self._enforce and any(f.check in IDENTITY_FAILURES for f in content):
                message += (
                    " (passed on because record_identity_checks is 'report', for simulations only)"
                )
            _LOGGER.error(message)
            self._alert(CHECK_FAILED, message)
        else:
            self._clear(CHECK_FAILED)

    def _alert(self, sub_type: str, message: str) -> None:
        if self._alerts is not None:
            self._alerts.warn(sub_type, message)

    def _clear(self, sub_type: str) -> None:
        if self._alerts is not None:
            self._alerts.clear(sub_type)


def _missing(error: BaseException) -> bool:
    return isinstance(error, RecordMissing)


def expectation_from(facts: Mapping[str, Any], meter_id: str) -> RecordExpectation:
    """What a transaction's record must say, from what the book kept about its start.

    ``tariff_text`` is kept only when it was sent (``/v2``), so only then is it checked.
    """

    def text(key: str) -> str | None:
        value = facts.get(key)
        return value if isinstance(value, str) else None

    def number(key: str) -> int | None:
        value = facts.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return RecordExpectation(
        meter_id=meter_id or None,
        client_id=text("client_id"),
        evse_id=text("evse_id"),
        tariff_text=text("tariff_text"),
        cable_id=number("cable_id"),
        pagination=number("pagination"),
        after_pagination=number("previous_pagination"),
    )


def has_end_reading(record: str) -> bool:
    """True when an OCMF record holds a transaction end reading (``TX: "E"``)."""
    try:
        readings = parse_ocmf(record).payload.get("RD", [])
    except ValueError:
        return False
    return isinstance(readings, list) and any(
        isinstance(r, dict) and r.get("TX") == "E" for r in readings
    )
