"""The controller's session with the meter: every request, its retries, and settling.

The controller decides; this layer carries its requests to the injected ``MeterApi``
client (the transport's protocol layer, in the manner of a device library's protocol
over its transport). Idempotent reads are retried on the one ``RetryPolicy``. A start
or a stop whose answer was lost (no answer, a 5xx, an unreadable body) is settled by
asking the meter what happened: a start is sent again only once the meter showed it did
not carry it out, and never when the meter cannot say (no ``GET /legal``).

A meter (or mock) without ``GET /legal`` degrades: that is noted once per session
(``legal_missing``), and the running transaction is then the one the controller says
it started (``started``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from lem_dcbm.clock import Clock
from lem_dcbm.core.ports import MeterApi
from lem_dcbm.core.short_session import REFUSED_PAUSE_S, meter_elapsed_s
from lem_dcbm.errors import ControllerError, MeterError, MeterStatusError
from lem_dcbm.meter.models import LegalState, MeterStatus, SettingsResult
from lem_dcbm.retry import RetryPolicy, answer_lost

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses saying the meter does not offer an endpoint at all.
ENDPOINT_MISSING = frozenset({404, 405})
NO_GET_LEGAL = "the meter offers no GET /legal"


@dataclass(frozen=True, slots=True)
class Running:
    """A transaction running at the meter; ``transaction_id`` None when none can say which."""

    transaction_id: str | None
    #: How long it has run by the meter's own count, when the meter says.
    elapsed_s: float | None = None
    #: What the meter says the transaction was started with (None: it did not say).
    evse_id: str | None = None
    client_id: str | None = None


class MeterSession:
    """Requests to the meter for the controller: retried, and settled when lost."""

    def __init__(
        self,
        meter: MeterApi,
        clock: Clock,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None],
        started: Callable[[], str | None],
    ) -> None:
        self._meter = meter
        self._clock = clock
        #: Retries of idempotent requests and of lost answers (replaced at run time).
        self.policy = policy
        self._sleep = sleep
        #: The transaction this module started and believes running (without GET /legal).
        self._started = started
        #: Why ``GET /legal`` is not asked (once it answered 404/405), None while it is.
        self.legal_missing: str | None = None

    # -- what the meter is -------------------------------------------------------------------

    @property
    def api_version(self) -> str:
        return self._meter.api_version

    @api_version.setter
    def api_version(self, version: str) -> None:
        self._meter.api_version = version

    def status_once(self) -> MeterStatus:
        """``GET /status`` once, unretried (init's retries are the ready loop's)."""
        return self._meter.status()

    def supports_v2(self) -> bool:
        return self._meter.supports_v2()

    def settings(self) -> dict[str, Any]:
        return self._meter.settings()

    def put_settings(self, patch: Mapping[str, Any]) -> SettingsResult:
        return self._meter.put_settings(patch)

    def ocmf(self, transaction_id: str) -> str:
        """The transaction's record as the meter holds it now (unretried: its callers wait)."""
        return self._meter.ocmf(transaction_id)

    def ocmf_by_index(self, index: int) -> str:
        """The record in slot ``index`` of the meter's ring (unretried, as ``ocmf``)."""
        return self._meter.ocmf_by_index(index)

    # -- reads -------------------------------------------------------------------------------

    def read(self, what: str, fn: Callable[[], T], deadline: float | None = None) -> T:
        """An idempotent read, retried like any such request."""
        return self.policy.run(
            fn, what=what, sleep=self._sleep, monotonic=self._clock.monotonic, deadline=deadline
        )

    def status(self, deadline: float | None = None) -> MeterStatus:
        return self.read("read the meter status", self._meter.status, deadline)

    def legal(self, deadline: float | None = None) -> LegalState | None:
        """``GET /legal``, or None once the meter showed it does not offer it (404/405)."""
        if self.legal_missing is not None:
            return None
        try:
            return self.read("read the running transaction", self._meter.legal, deadline)
        except MeterStatusError as err:
            if err.status not in ENDPOINT_MISSING:
                raise
            self.legal_missing = f"HTTP {err.status}"
            _LOGGER.warning(
                "%s (%s): the running transaction is taken from the status bits and from what "
                "this module started; not asked again this run",
                NO_GET_LEGAL,
                err,
            )
            return None

    def state(self, deadline: float | None = None) -> tuple[MeterStatus, Running | None]:
        """The meter's status and the transaction it runs now (None when none runs).

        Without ``GET /legal`` the running one is the one this module started, if any.
        """
        status = self.status(deadline)
        if not status.transaction_ongoing:
            return status, None
        legal = self.legal(deadline)
        if legal is None:
            return status, Running(self._started())
        if not legal.running:
            return status, None
        return status, Running(
            legal.transaction_id,
            elapsed_s=meter_elapsed_s(legal.raw),
            evse_id=legal.evse_id,
            client_id=legal.client_id,
        )

    def running(self, deadline: float | None = None) -> Running | None:
        """The transaction running at the meter now, or None."""
        return self.state(deadline)[1]

    # -- start and stop ----------------------------------------------------------------------

    def start(self, body: Mapping[str, Any], transaction_id: str) -> None:
        """``POST /legal``; a lost answer is settled by asking the meter, never re-sent blindly.

        Sent again only when the meter showed it did not carry the start out.
        """
        not_carried_out: list[BaseException] = []
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self._meter.start_transaction(body)
            except MeterError as err:
                lost = answer_lost(err)
                if (lost or attempts > 1) and self._start_settled(err, transaction_id):
                    return
                if lost:
                    not_carried_out.append(err)
                raise

        replace(self.policy, retryable=not_carried_out.__contains__).run(
            attempt,
            what=f"start of {transaction_id}",
            sleep=self._sleep,
            monotonic=self._clock.monotonic,
        )

    def _start_settled(self, err: MeterError, transaction_id: str) -> bool:
        """True when the meter runs the start whose answer failed; raises when it can't be."""
        running = self.running()
        if running is None:
            return False
        if running.transaction_id is None:
            raise ControllerError(
                f"the start's answer was lost ({err}) and {NO_GET_LEGAL} to tell "
                "whether it was carried out; it is not sent again"
            ) from err
        if running.transaction_id == transaction_id:
            _LOGGER.warning(
                "start of %s: the answer was lost (%s) but the meter runs it", transaction_id, err
            )
            return True
        raise MeterError(
            err.method,
            err.endpoint,
            f"{err.detail}; the meter now runs transaction {running.transaction_id} instead",
            base_url=err.base_url,
        ) from err

    def stop(
        self, transaction_id: str, deadline: float | None, *, refused_until: float | None = None
    ) -> int | None:
        """``PUT /legal``; the transaction status the meter reported (None: it did not say).

        A lost answer is settled by asking the meter whether it stopped; while it still runs
        the stop is sent again within the policy and ``deadline``. Until ``refused_until``
        (monotonic), a refusal still means the meter's minimum duration has not quite
        passed: the stop is sent again a moment later. Raises the meter's error otherwise.
        """
        refused: list[BaseException] = []
        lost: list[BaseException] = []
        unsure = False

        def attempt() -> int | None:
            nonlocal unsure
            try:
                report = self._meter.stop_transaction(transaction_id)
            except MeterError as err:
                if (
                    refused_until is not None
                    and isinstance(err, MeterStatusError)
                    and 400 <= err.status < 500
                    and self._clock.monotonic() + REFUSED_PAUSE_S <= refused_until
                ):
                    refused.append(err)
                    raise
                unsure = False
                running = self.running(deadline)
                # Without GET /legal a running transaction may be this one: never assume not.
                unsure = running is not None and self.legal_missing is not None
                if not unsure and (running is None or running.transaction_id != transaction_id):
                    _LOGGER.warning(
                        "stop of %s: no answer usable (%s), but the meter stopped it",
                        transaction_id,
                        err,
                    )
                    last = self.legal(deadline)
                    if last is not None and last.transaction_id == transaction_id:
                        return last.transaction_status
                    return None
                if answer_lost(err):
                    lost.append(err)
                raise
            if report.still_running:
                raise ControllerError(
                    f"the meter reports transaction status {report.transaction_status} "
                    "(still running) after the stop",
                )
            return report.transaction_status

        def settled() -> int | None:
            try:
                return replace(self.policy, retryable=lost.__contains__).run(
                    attempt,
                    what=f"stop of {transaction_id}",
                    sleep=self._sleep,
                    monotonic=self._clock.monotonic,
                    deadline=deadline,
                )
            except MeterError as err:
                if unsure and answer_lost(err):
                    raise ControllerError(
                        f"the stop's answer was lost ({err}); the meter still reports a "
                        f"running transaction and {NO_GET_LEGAL} to tell which"
                    ) from err
                raise

        if refused_until is None:
            return settled()
        return replace(REFUSED_AGAIN, retryable=refused.__contains__).run(
            settled,
            what=f"stop of {transaction_id} within the meter's minimum duration",
            sleep=self._sleep,
            monotonic=self._clock.monotonic,
        )


#: A stop refused just before the meter's minimum duration passed is sent again this often.
REFUSED_AGAIN = RetryPolicy(
    attempts=None, first_delay_s=REFUSED_PAUSE_S, max_delay_s=REFUSED_PAUSE_S
)
