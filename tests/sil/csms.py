"""A CSMS for the simulated charger: OCPP 2.0.1 and 1.6 from the ``ocpp`` package.

It accepts any charging station on ``ws://127.0.0.1:<port>/<station id>``, answers what
EVerest's OCPP modules send (the ``ocpp`` package checks each message against the OCPP
schemas on the way in), keeps every message as it arrived and checks every signed meter
value it finds, the way a CSMS that invoices would: the OCMF signature with the meter's
own public key (asked from the meter, not taken from the message) and lem-dcbm's record
checks (``lem_dcbm.records.checks``). It runs its own event loop in a thread, so tests
stay synchronous and wait on what arrived with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import AuthorizationStatus, RegistrationStatus
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import RegistrationStatusEnumType

from lem_dcbm.harness import HarnessError, wait_until
from lem_dcbm.ocmf import parse_ocmf
from lem_dcbm.records.checks import READINGS, RecordExpectation, check_record
from lem_dcbm.records.readings import BEGIN, END, OBIS_IMPORT, readings_of, select

_LOG = logging.getLogger(__name__)
#: Subprotocols offered, as EVerest's modules ask for them.
SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")
BEGIN_CONTEXT = "Transaction.Begin"
END_CONTEXT = "Transaction.End"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ocmf_text(data: str) -> tuple[str, str]:
    """The OCMF record in a signed value as sent, and how it was encoded (plain or base64).

    OCPP 2.0.1 says ``signedMeterData`` is base64; EVerest passes on what the powermeter
    gave, so both forms are read. Anything else comes back as it is, for the checks to
    name.
    """
    text = data.strip()
    if text.startswith("OCMF|"):
        return text, "plain"
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return text, "unknown"
    return (decoded, "base64") if decoded.startswith("OCMF|") else (text, "unknown")


def record_kind(record: str) -> str:
    """``begin`` (begin readings only), ``whole`` (begin and end) or ``unreadable``."""
    try:
        readings = readings_of(parse_ocmf(record).payload)
    except ValueError:
        return "unreadable"
    begins = len(select(readings, BEGIN, OBIS_IMPORT))
    ends = len(select(readings, END, OBIS_IMPORT))
    if begins == 1 and ends == 0:
        return "begin"
    return "whole" if begins == 1 and ends == 1 else "unreadable"


@dataclass(frozen=True)
class SignedValue:
    """One signed meter value as it reached the CSMS, with the CSMS's verdict on it."""

    #: ``2.0.1`` or ``1.6``.
    ocpp: str
    #: The message: ``TransactionEvent``, ``MeterValues``, ``StopTransaction``.
    action: str
    #: ``Started``/``Updated``/``Ended`` for a TransactionEvent, else "".
    event: str
    #: The OCPP transaction id as the charger sent it (a string for both versions).
    transaction_id: str
    #: The sampled value's ``context`` (``Transaction.Begin``, ``Transaction.End``, ...).
    context: str
    #: The OCMF record, decoded when it came base64-encoded.
    record: str
    #: ``plain``, ``base64`` or ``unknown``.
    encoding: str
    #: The public key the message carried ("" when none).
    public_key_sent: str
    #: The signature checked with the meter's own key; None when no key was known.
    signature_valid: bool | None
    #: Failed record checks (``check: detail``); a begin record lacks end readings by design.
    failures: tuple[str, ...]
    #: ``begin``, ``whole`` or ``unreadable`` (see :func:`record_kind`).
    kind: str

    @property
    def verified(self) -> bool:
        """The signature verifies with the meter's key and no record check failed."""
        return self.signature_valid is True and not self.failures

    def describe(self) -> str:
        """One line for reports and failure messages."""
        verdict = "verified" if self.verified else f"NOT verified {self.failures}"
        sig = {True: "ok", False: "BAD", None: "unchecked"}[self.signature_valid]
        return (
            f"{self.ocpp} {self.action}{'/' + self.event if self.event else ''} "
            f"tx={self.transaction_id} {self.context} {self.kind} record "
            f"({self.encoding}, signature {sig}): {verdict}"
        )


@dataclass
class Received:
    """A message from a charging station, as it arrived."""

    station: str
    ocpp: str
    raw: str
    message: list[Any]

    @property
    def action(self) -> str:
        """The action of a Call ("" for results and errors)."""
        return str(self.message[2]) if self.message and self.message[0] == 2 else ""

    @property
    def payload(self) -> dict[str, Any]:
        """The Call's payload ({} for results and errors)."""
        if self.action and isinstance(self.message[3], dict):
            return self.message[3]
        return {}


@dataclass
class Csms:
    """The CSMS: ``start()``, point the charger at ``url``, read ``signed_values()``."""

    #: The meter's ``publicKeyOcmf`` (hex or base64 DER); set before the first record.
    meter_key: str | None = None
    #: What every record must say (the meter's id at least).
    expectation: RecordExpectation = field(default_factory=RecordExpectation)
    host: str = "127.0.0.1"
    port: int = 0
    _messages: list[Received] = field(default_factory=list, init=False)
    _values: list[SignedValue] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _stop: asyncio.Event | None = field(default=None, init=False)
    _transaction_ids: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        """``ws://host:port`` (the charger appends its station id)."""
        return f"ws://{self.host}:{self.port}"

    # --- life -------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> Csms:
        """Serve in a thread of its own; return once the port is known."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._serve(ready))
            except BaseException as exc:  # reported to start() or in the log
                failure.append(exc)
                ready.set()
                _LOG.exception("the CSMS ended")

        self._thread = threading.Thread(target=run, name="csms", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s) or failure:
            raise HarnessError(f"the CSMS did not start: {failure}")
        return self

    def stop(self) -> None:
        """End the server and every connection."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Csms:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with websockets.serve(
            self._connected, self.host, self.port, subprotocols=list(SUBPROTOCOLS)
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            ready.set()
            await self._stop.wait()
            server.close()

    async def _connected(self, connection: Any) -> None:
        station = connection.request.path.strip("/").split("/")[-1] or "station"
        version = connection.subprotocol or "ocpp2.0.1"
        point: ChargePoint201 | ChargePoint16
        if version == "ocpp1.6":
            point = _Station16(station, connection, self)
        else:
            point = _Station201(station, connection, self)
        try:
            await point.start()
        except websockets.ConnectionClosed:
            _LOG.info("station %s disconnected", station)

    # --- what arrived -------------------------------------------------------------------

    def received(self, station: str, ocpp: str, raw: str) -> None:
        """Keep a message and check the signed values in it (called by the stations)."""
        try:
            message = json.loads(raw)
        except ValueError:
            message = []
        entry = Received(station, ocpp, raw, message if isinstance(message, list) else [])
        values = list(self._signed_values_in(entry))
        with self._lock:
            self._messages.append(entry)
            self._values.extend(values)

    def next_transaction_id(self) -> int:
        """A fresh OCPP 1.6 transaction id."""
        with self._lock:
            self._transaction_ids += 1
            return self._transaction_ids

    def messages(self, action: str | None = None) -> list[Received]:
        """Every message so far (only Calls of ``action`` when given)."""
        with self._lock:
            found = list(self._messages)
        return found if action is None else [m for m in found if m.action == action]

    def signed_values(self) -> list[SignedValue]:
        """Every signed meter value so far, in arrival order."""
        with self._lock:
            return list(self._values)

    def transaction_events(self) -> list[dict[str, Any]]:
        """The payloads of every OCPP 2.0.1 TransactionEvent so far."""
        return [m.payload for m in self.messages("TransactionEvent")]

    def wait_for(self, what: str, condition: Callable[[Csms], Any], timeout_s: float) -> Any:
        """Wait until ``condition(self)`` is truthy; fail naming what arrived."""
        try:
            return wait_until(lambda: condition(self), timeout_s, interval=0.2, what=what)
        except HarnessError as err:
            raise HarnessError(f"{err}; the CSMS got: {self.summary()}") from None

    def summary(self) -> str:
        """The actions received and every signed value, for failure messages and reports."""
        actions = [m.action for m in self.messages() if m.action]
        lines = [f"actions {actions}"]
        lines += [value.describe() for value in self.signed_values()]
        return "\n".join(lines)

    # --- the signed values --------------------------------------------------------------

    def _signed_values_in(self, entry: Received) -> list[SignedValue]:
        payload = entry.payload
        found: list[SignedValue] = []
        if entry.action == "TransactionEvent" or (
            entry.action == "MeterValues" and entry.ocpp != "ocpp1.6"
        ):
            # 2.0.1 carries a signed value as the sampled value's signedMeterValue, in the
            # transaction events and in the (clock-aligned, idle) MeterValues alike.
            info = payload.get("transactionInfo") or {}
            for meter_value in payload.get("meterValue") or []:
                for sampled in meter_value.get("sampledValue") or []:
                    signed = sampled.get("signedMeterValue")
                    if isinstance(signed, dict):
                        found.append(
                            self._check(
                                entry,
                                event=str(payload.get("eventType", "")),
                                transaction_id=str(info.get("transactionId", "")),
                                context=str(sampled.get("context", "Sample.Periodic")),
                                data=str(signed.get("signedMeterData", "")),
                                key=str(signed.get("publicKey", "")),
                            )
                        )
        elif entry.action in ("MeterValues", "StopTransaction"):
            rows = payload.get("meterValue" if entry.action == "MeterValues" else "transactionData")
            for meter_value in rows or []:
                for sampled in meter_value.get("sampledValue") or []:
                    if sampled.get("format") == "SignedData":
                        found.append(
                            self._check(
                                entry,
                                event="",
                                transaction_id=str(payload.get("transactionId", "")),
                                context=str(sampled.get("context", "Sample.Periodic")),
                                data=str(sampled.get("value", "")),
                                key="",
                            )
                        )
        return found

    def _check(
        self, entry: Received, *, event: str, transaction_id: str, context: str, data: str, key: str
    ) -> SignedValue:
        record, encoding = ocmf_text(data)
        kind = record_kind(record)
        verdict = check_record(record, self.expectation, self.meter_key)
        failures = [f"{f.check}: {f.detail}" for f in verdict.failures]
        if kind == "begin":
            # A start record holds the begin readings only: that is its shape, not a fault.
            failures = [f for f in failures if not f.startswith(f"{READINGS}:")]
        if context == BEGIN_CONTEXT and kind != "begin":
            failures.append(f"context: a {kind} record under {BEGIN_CONTEXT}")
        if context == END_CONTEXT and kind != "whole":
            failures.append(f"context: a {kind} record under {END_CONTEXT}")
        return SignedValue(
            ocpp="1.6" if entry.ocpp == "ocpp1.6" else "2.0.1",
            action=entry.action,
            event=event,
            transaction_id=transaction_id,
            context=context,
            record=record,
            encoding=encoding,
            public_key_sent=key,
            signature_valid=verdict.signature_valid,
            failures=tuple(failures),
            kind=kind,
        )


class _Station201(ChargePoint201):  # type: ignore[misc]
    """One OCPP 2.0.1 connection; every message goes to the CSMS first."""

    def __init__(self, station: str, connection: Any, csms: Csms) -> None:
        super().__init__(station, connection)
        self._csms = csms

    async def route_message(self, raw_msg: str) -> None:
        self._csms.received(self.id, "ocpp2.0.1", raw_msg)
        await super().route_message(raw_msg)

    @on(Action201.boot_notification)
    def _boot(self, **_: Any) -> Any:
        return result201.BootNotification(
            current_time=_now(), interval=30, status=RegistrationStatusEnumType.accepted
        )

    @on(Action201.heartbeat)
    def _heartbeat(self, **_: Any) -> Any:
        return result201.Heartbeat(current_time=_now())

    @on(Action201.status_notification)
    def _status(self, **_: Any) -> Any:
        return result201.StatusNotification()

    @on(Action201.notify_event)
    def _event(self, **_: Any) -> Any:
        return result201.NotifyEvent()

    @on(Action201.security_event_notification)
    def _security(self, **_: Any) -> Any:
        return result201.SecurityEventNotification()

    @on(Action201.notify_report)
    def _report(self, **_: Any) -> Any:
        return result201.NotifyReport()

    @on(Action201.meter_values)
    def _meter_values(self, **_: Any) -> Any:
        return result201.MeterValues()

    @on(Action201.authorize)
    def _authorize(self, **_: Any) -> Any:
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on(Action201.transaction_event)
    def _transaction(self, id_token: Any = None, **_: Any) -> Any:
        if id_token:
            return result201.TransactionEvent(id_token_info={"status": "Accepted"})
        return result201.TransactionEvent()


class _Station16(ChargePoint16):  # type: ignore[misc]
    """One OCPP 1.6 connection; every message goes to the CSMS first."""

    def __init__(self, station: str, connection: Any, csms: Csms) -> None:
        super().__init__(station, connection)
        self._csms = csms

    async def route_message(self, raw_msg: str) -> None:
        self._csms.received(self.id, "ocpp1.6", raw_msg)
        await super().route_message(raw_msg)

    @on(Action16.boot_notification)
    def _boot(self, **_: Any) -> Any:
        return result16.BootNotification(
            current_time=_now(), interval=30, status=RegistrationStatus.accepted
        )

    @on(Action16.heartbeat)
    def _heartbeat(self, **_: Any) -> Any:
        return result16.Heartbeat(current_time=_now())

    @on(Action16.status_notification)
    def _status(self, **_: Any) -> Any:
        return result16.StatusNotification()

    @on(Action16.meter_values)
    def _meter_values(self, **_: Any) -> Any:
        return result16.MeterValues()

    @on(Action16.authorize)
    def _authorize(self, **_: Any) -> Any:
        return result16.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action16.start_transaction)
    def _start(self, **_: Any) -> Any:
        return result16.StartTransaction(
            transaction_id=self._csms.next_transaction_id(),
            id_tag_info={"status": AuthorizationStatus.accepted},
        )

    @on(Action16.stop_transaction)
    def _stop(self, **_: Any) -> Any:
        return result16.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action16.security_event_notification)
    def _security(self, **_: Any) -> Any:
        return result16.SecurityEventNotification()

    @on(Action16.firmware_status_notification)
    def _firmware(self, **_: Any) -> Any:
        return result16.FirmwareStatusNotification()

    @on(Action16.diagnostics_status_notification)
    def _diagnostics(self, **_: Any) -> Any:
        return result16.DiagnosticsStatusNotification()
