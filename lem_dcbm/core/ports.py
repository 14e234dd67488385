"""The interfaces the core depends on: what it asks of the meter and tells EVerest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from lem_dcbm.core.results import PowermeterValue, StartResult, StopResult, TransactionRequest
from lem_dcbm.json_types import JsonValue
from lem_dcbm.meter.models import LegalState, LiveMeasure, MeterStatus, SettingsResult, StopReport
from lem_dcbm.records.late_record import KeptRecord

#: A runtime configuration change: ``(key, value) -> (status, message)``.
ConfigChangeHandler = Callable[[str, JsonValue], tuple[str, str]]
#: Where the record of a transaction is kept (the journal), by transaction id.
RecordLookup = Callable[[str], "KeptRecord | None"]


class MeterApi(Protocol):
    """The meter's REST API as the core uses it (``lem_dcbm.meter.client.MeterClient``)."""

    api_version: str

    def status(self) -> MeterStatus:
        """``GET /v1/status``."""
        ...

    def livemeasure(self, timeout_s: float | None = None) -> LiveMeasure:
        """``GET /{v}/livemeasure``, with an optional shorter timeout."""
        ...

    def supports_v2(self) -> bool:
        """True when the meter serves the ``/v2`` API."""
        ...

    def legal(self) -> LegalState:
        """``GET /{v}/legal``: the current or last transaction."""
        ...

    def start_transaction(self, body: Mapping[str, object]) -> LegalState:
        """``POST /{v}/legal``."""
        ...

    def stop_transaction(self, transaction_id: str) -> StopReport:
        """``PUT /{v}/legal?transactionId=...``."""
        ...

    def ocmf(self, transaction_id: str | None = None) -> str:
        """``GET /{v}/ocmf[?transactionId=...]``: the signed record, unchanged."""
        ...

    def ocmf_by_index(self, index: int) -> str:
        """``GET /ocmf/{index}``: the record in a ring slot (negative: back from the latest)."""
        ...

    def settings(self) -> dict[str, Any]:
        """``GET /v1/settings``."""
        ...

    def put_settings(self, patch: Mapping[str, object]) -> SettingsResult:
        """``PUT /v1/settings``."""
        ...


class EverestOutputs(Protocol):
    """What the core publishes towards EVerest (implemented by the MQTT adapter)."""

    def publish_powermeter(self, value: PowermeterValue) -> object:
        """Publish a measurement (dropped while the broker is away)."""
        ...

    def publish_public_key_ocmf(self, key: str) -> object:
        """Publish the ``public_key_ocmf`` var."""
        ...

    def raise_error(self, name: str, sub_type: str, message: str, severity: str = "High") -> None:
        """Raise ``<namespace>/<name>`` with ``sub_type`` (idempotent)."""
        ...

    def clear_error(self, name: str, sub_type: str) -> None:
        """Clear ``<namespace>/<name>`` with ``sub_type`` if raised."""
        ...


class PowermeterHandlers(Protocol):
    """What the core provides for the two commands of the powermeter interface."""

    def start_transaction(self, request: TransactionRequest) -> StartResult:
        """Start a transaction."""
        ...

    def stop_transaction(self, transaction_id: str) -> StopResult:
        """Stop a transaction (an empty id: whatever runs)."""
        ...


class RecordTopics(Protocol):
    """Where an adapter publishes late records (both adapters do it the same way)."""

    def publish_late_record(self, record: KeptRecord, published_at: str) -> bool:
        """Publish ``record`` retained."""
        ...

    def late_record_topic(self, transaction_id: str) -> str:
        """The retained topic of ``transaction_id``'s record."""
        ...


class PowermeterAdapter(EverestOutputs, RecordTopics, Protocol):
    """The bus side of one module instance: EVerest's module protocol or its external API.

    Where the two modes differ, the adapter says so through these members; the service
    composing the module never asks which adapter it holds.
    """

    #: Set when the module is asked to shut down (by the manager, or by ``close``).
    shutdown_requested: threading.Event

    @property
    def unanswered_stop_asked_again(self) -> bool:
        """True when a stop whose answer was lost is asked again after a stack restart."""
        ...

    @property
    def command_running(self) -> bool:
        """True while a command is being carried out."""
        ...

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raise ``BrokerUnavailable`` when the broker stays away."""
        ...

    def condition_outputs(self, error_profile: str) -> EverestOutputs:
        """Where the core's outputs and conditions go under ``error_profile``."""
        ...

    def watch_takeovers(self, holds_module_id: Callable[[], bool]) -> None:
        """Name the cause when another client keeps taking this module's MQTT client id."""
        ...

    def serve_config_changes(self, handler: ConfigChangeHandler) -> None:
        """Answer runtime configuration changes with ``handler`` where the mode has them."""
        ...

    def records_from(self, lookup: RecordLookup) -> None:
        """Where a stop's record is found when its answer had nowhere to go."""
        ...

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after every (re)connect."""
        ...

    def announce_ready(self) -> None:
        """Tell EVerest the module is ready."""
        ...

    def wait_global_ready(self, stop: threading.Event) -> bool:
        """Wait until EVerest lets modules run; False if stopped first."""
        ...

    def close(self, timeout_s: float = 5.0, *, flush_s: float | None = None) -> None:
        """Finish the command in flight (up to ``timeout_s``), answer it, disconnect."""
        ...


class Alerts(Protocol):
    """Vendor warnings the controller raises about records and transactions."""

    def warn(self, sub_type: str, message: str) -> None:
        """Raise ``VendorWarning`` with ``sub_type`` (idempotent)."""
        ...

    def clear(self, sub_type: str) -> None:
        """Clear ``VendorWarning`` with ``sub_type`` if raised."""
        ...


class MeterOwners(Protocol):
    """Who else drives this meter, and where the controller reports a transaction not its own."""

    def claim(self, meter_id: str) -> None:
        """Claim the meter with serial ``meter_id`` for this module (before any transaction)."""
        ...

    def others(self) -> tuple[str, ...]:
        """Ids of the other modules that claim the same meter now (empty: none known)."""
        ...

    def foreign_transaction(self, message: str | None) -> None:
        """Raise the condition that a foreign transaction blocks starts; None clears it."""
        ...


class LateRecords(Protocol):
    """The second road for a record that arrives after its stop was answered."""

    def publish(self, record: KeptRecord) -> bool:
        """Hand ``record`` to backends (retained); True when it was sent or queued."""
        ...

    def where(self, transaction_id: str) -> str:
        """Where the record of ``transaction_id`` will appear, for the stop's answer."""
        ...


class JournalEntryView(Protocol):
    """What the core reads of one journal entry."""

    @property
    def transaction_id(self) -> str:
        """The transaction (or archived session) the entry is about."""
        ...

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps recorded, in order."""
        ...

    @property
    def ocmf(self) -> str | None:
        """The signed record, once fetched."""
        ...

    @property
    def data(self) -> Mapping[str, Any]:
        """The facts stored along the steps."""
        ...

    @property
    def started(self) -> bool:
        """The meter confirmed the start."""
        ...

    @property
    def stopped(self) -> bool:
        """The meter confirmed the stop."""
        ...


class Journal(Protocol):
    """The durable store of transaction steps (``lem_dcbm.journal.TransactionJournal``)."""

    def record(
        self,
        transaction_id: str,
        step: str,
        *,
        ocmf: str | None = None,
        also: tuple[str, ...] = (),
        **data: object,
    ) -> JournalEntryView:
        """Add ``step`` durably; raise ``OSError`` when the disk refuses."""
        ...

    def get(self, transaction_id: str) -> JournalEntryView | None:
        """The entry of ``transaction_id``, if any."""
        ...

    def entries(self) -> Sequence[JournalEntryView]:
        """Every entry, least recently written first."""
        ...

    def open_transactions(self) -> Sequence[JournalEntryView]:
        """Entries started and not stopped."""
        ...

    def awaiting_record(self) -> Sequence[JournalEntryView]:
        """Entries stopped whose record is still to be fetched."""
        ...

    def rename(self, transaction_id: str, new_id: str) -> JournalEntryView:
        """Keep an entry under another id (a reused id's earlier session)."""
        ...
