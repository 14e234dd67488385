"""Composition and lifecycle: config -> meter client -> controller -> EVerest adapter.

This is the only module that imports every layer. It runs the ready loop on a thread,
waits for a stop signal (SIGTERM, SIGINT or the manager's shutdown message), then
lets the command in flight finish and disconnects cleanly.

Threads, and what each one owns:

- ``ready-loop``: meter init, then the 1 Hz beat: reads ``livemeasure`` and the status
  bits over the measurement client (a connection of its own) and publishes. It takes
  no lock the others hold, so it never waits for them.
- ``commands`` (the adapter's worker): one EVerest command at a time, under the
  controller's lock, over the command client; the lock is held across the meter
  requests of a command on purpose (the meter runs one transaction request at a time).
- ``housekeeping``: clock sync and missing records, over the command client, only when
  the controller's lock is free (``acquire(blocking=False)``) and no command waits for it;
  it stops between steps when one does: a command waits for one step at most.
- paho's network thread and the bus's dispatch thread: MQTT only; the dispatch thread
  parses and validates each call and answers a refused one at once, so it never waits
  behind a command at the meter; valid calls go to the worker's queue. It never calls
  the meter. Start and stop stay one queue, in order: both act on the one meter's
  transaction, and a stop must not overtake its start (docs/concurrency.md).
- the main thread waits for the stop event; ``shutdown-watch`` turns the manager's
  shutdown message into it.

The time sync and the record book are used only under the controller's lock; the
journal has a lock of its own because other readers (``lem-dcbm records``) share it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TypeVar

from lem_dcbm.clock import Clock, SystemClock, rfc3339
from lem_dcbm.config import BrokerSettings, ModuleConfig
from lem_dcbm.core.controller import MeterController
from lem_dcbm.core.health_monitor import HealthMonitor
from lem_dcbm.core.host_clock_trust import HostClockCheck
from lem_dcbm.core.ports import (
    Alerts,
    EverestOutputs,
    LateRecords,
    PowermeterAdapter,
    RecordTopics,
)
from lem_dcbm.core.ready_loop import LoopTiming, ReadyLoop
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.results import StartResult, StopResult, TransactionRequest
from lem_dcbm.core.temperature_monitor import TemperatureMonitor
from lem_dcbm.core.timesync import TimeSync
from lem_dcbm.errors import ConfigError
from lem_dcbm.everest.adapter import EverestAdapter
from lem_dcbm.everest.bus import BrokerRefused, BrokerUnavailable
from lem_dcbm.everest.meter_claim import MeterClaim
from lem_dcbm.everest.presence import InstanceGuard
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.json_types import JsonObject
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.records.late_record import KeptRecord, kept_record_from_entry
from lem_dcbm.retry import RetryPolicy
from lem_dcbm.runtime_config import (
    RunningParts,
    RuntimeConfig,
    clock_settings,
    controller_settings,
    temperature_limits,
)
from lem_dcbm.startup_gate import StartupGate

_LOGGER = logging.getLogger(__name__)

AdapterT = TypeVar("AdapterT", bound=PowermeterAdapter)


class LateBoundHandlers:
    """The controller's commands for both adapters, once the meter is set up.

    The adapter subscribes before the controller exists (in manager mode even before the
    configuration is known), and a broker hands over calls it kept across a restart at
    once: those wait in ``gate`` for the meter's init, bounded (``lem_dcbm.startup_gate``).
    """

    def __init__(self, clock: Clock) -> None:
        self.gate: StartupGate[MeterController] = StartupGate(clock)

    def start_transaction(self, request: TransactionRequest) -> StartResult:
        """Forward to the controller once the meter is set up, or say why not."""
        admitted = self.gate.admit(f"start_transaction of {request.transaction_id!r}")
        if isinstance(admitted, str):
            return StartResult(error=admitted)
        return admitted.target.start_transaction(request, received_at=admitted.arrived)

    def stop_transaction(self, transaction_id: str) -> StopResult:
        """Forward to the controller once the meter is set up, or say why not."""
        admitted = self.gate.admit(f"stop_transaction of {transaction_id!r}")
        if isinstance(admitted, str):
            return StopResult(error=admitted)
        return admitted.target.stop_transaction(transaction_id, received_at=admitted.arrived)


@dataclass
class MeterStack:
    """The meter-facing objects built from one configuration.

    Two clients, so two connections: ``client`` for commands and background work,
    ``measurements`` for the 1 Hz beat, which therefore never waits behind either.
    """

    client: MeterClient
    measurements: MeterClient
    controller: MeterController
    #: This module's claim on the meter, withdrawn at the close.
    claim: MeterClaim | None = None

    def close(self) -> None:
        """Close both clients' connections (and withdraw the claim on the meter)."""
        self.client.close()
        self.measurements.close()
        if self.claim is not None:
            self.claim.close()


#: The longest shutdown waits for a command still at the meter (EVerest's manager and
#: systemd give a module more than this before they kill it).
SHUTDOWN_COMMAND_WAIT_CAP_S = 45.0
#: How long shutdown gives the broker to take the last answers.
SHUTDOWN_FLUSH_S = 5.0


def command_bound_s(config: ModuleConfig) -> float:
    """How long one command may still need at the meter: what shutdown waits for it.

    A stop may wait ``stop_record_wait_ms`` for its record and then settle a few requests,
    each up to ``command_timeout_ms`` and a retry delay; capped by
    ``SHUTDOWN_COMMAND_WAIT_CAP_S``.
    """
    request_s = config.command_timeout_ms / 1000.0
    delay_s = config.resilience_transaction_request_retry_delay / 1000.0
    wanted = config.stop_record_wait_ms / 1000.0 + 3 * (request_s + delay_s)
    return min(SHUTDOWN_COMMAND_WAIT_CAP_S, wanted)


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, BrokerUnavailable)


#: Reaching the MQTT broker at start-up: every 2 s until it answers (or the service stops).
BROKER_RETRY = RetryPolicy(
    attempts=None, first_delay_s=2.0, max_delay_s=2.0, retryable=_unavailable
)
#: Pauses after the broker refused the module (credentials, TLS): only a fix of the
#: configuration helps, so the module asks less and less often, but never gives up.
BROKER_REFUSED_RETRY = RetryPolicy(
    attempts=None, first_delay_s=2.0, max_delay_s=60.0, retryable=_unavailable
)


def _broker_policy(error: BaseException) -> RetryPolicy:
    return BROKER_REFUSED_RETRY if isinstance(error, BrokerRefused) else BROKER_RETRY


#: How long one attempt to reach the broker may take.
BROKER_CONNECT_TIMEOUT_S = 3.0

#: Vendor warnings about records are informative: charging goes on (EvseManager's default).
VENDOR_WARNING = "VendorWarning"
VENDOR_ERROR = "VendorError"
#: ``VendorError`` sub type: another instance of this module id answers on the broker.
DUPLICATE_MODULE_ID = "DuplicateModuleId"


class VendorWarnings:
    """The controller's alerts as ``VendorWarning`` errors on EVerest."""

    def __init__(self, outputs: EverestOutputs) -> None:
        self._outputs = outputs

    def warn(self, sub_type: str, message: str) -> None:
        """Raise ``VendorWarning``/``sub_type``."""
        self._outputs.raise_error(VENDOR_WARNING, sub_type, message, "Low")

    def clear(self, sub_type: str) -> None:
        """Clear ``VendorWarning``/``sub_type``."""
        self._outputs.clear_error(VENDOR_WARNING, sub_type)


class LateRecordRoad:
    """The controller's late records, published retained on the adapter's record topic."""

    def __init__(self, adapter: RecordTopics, clock: Clock) -> None:
        self._adapter = adapter
        self._clock = clock

    def publish(self, record: KeptRecord) -> bool:
        """Publish ``record`` on its retained topic."""
        return self._adapter.publish_late_record(record, rfc3339(self._clock.utc_now()))

    def where(self, transaction_id: str) -> str:
        """The topic that will carry the record of ``transaction_id``."""
        return f"the retained MQTT topic {self._adapter.late_record_topic(transaction_id)}"


def _kept_record(journal: TransactionJournal, transaction_id: str) -> KeptRecord | None:
    entry = journal.get(transaction_id)
    return kept_record_from_entry(entry) if entry is not None else None


def journal_directory(
    config_value: str, module_id: str, environ: Mapping[str, str] | None = None
) -> Path:
    """Where this module's journal lives: ``<base>/<module_id>``.

    ``journal_dir`` from the config is the base; when empty, ``LEM_DCBM_STATE_DIR``, else
    ``/var/lib/lem-dcbm`` when it can be used, else the user's state directory. Each
    module id gets its own sub-directory, so modules never share a journal.
    """
    env = os.environ if environ is None else environ
    if config_value:
        base = Path(config_value)
    elif env.get("LEM_DCBM_STATE_DIR"):
        base = Path(env["LEM_DCBM_STATE_DIR"])
    else:
        system = Path("/var/lib/lem-dcbm")
        usable = system.is_dir() and os.access(system, os.W_OK)
        if not usable and not system.exists() and os.access(system.parent, os.W_OK):
            usable = True
        base = system if usable else _user_state_dir(env) / "lem-dcbm"
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in module_id) or "module"
    return base / safe_id


def _user_state_dir(env: Mapping[str, str]) -> Path:
    """``XDG_STATE_HOME``, else ``~/.local/state``; the working directory without a home."""
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"])
    try:
        return Path.home() / ".local" / "state"
    except RuntimeError:
        return Path.cwd() / "state"


def build_meter_stack(
    config: ModuleConfig,
    clock: Clock,
    *,
    journal: TransactionJournal | None = None,
    alerts: Alerts | None = None,
    late_records: LateRecords | None = None,
    claim: MeterClaim | None = None,
    unanswered_stop_asked_again: bool = True,
) -> MeterStack:
    """Build clients, time sync and controller; raise ``ConfigError`` for a bad certificate."""

    def connect() -> MeterClient:
        return MeterClient.connect(
            config.ip_address,
            config.port,
            tls_certificate_pem=config.meter_tls_certificate,
            timeout_s=config.command_timeout_ms / 1000.0,
            interface=config.interface,
        )

    client = connect()
    measurements = connect()
    clock_values = clock_settings(config)
    timesync = TimeSync(
        client,
        clock,
        timezone=clock_values.timezone,
        dst=clock_values.dst,
        ntp_servers=clock_values.ntp_servers,
        host_clock=HostClockCheck(config.host_clock_trust, config.host_clock_max_skew_s),
        alerts=alerts,
    )
    settings = replace(
        controller_settings(config), unanswered_stop_asked_again=unanswered_stop_asked_again
    )
    controller = MeterController(
        client,
        settings,
        clock,
        timesync,
        records=RecordBook(journal, alerts=alerts),
        alerts=alerts,
        late_records=late_records,
        measurements=measurements,
        owners=claim,
    )
    return MeterStack(client, measurements, controller, claim)


def meter_address(config: ModuleConfig) -> str:
    """The meter's URL as configured, for other modules' logs (``http://10.0.0.5:80``)."""
    scheme = "https" if config.meter_tls_certificate else "http"
    host = f"[{config.ip_address}]" if ":" in config.ip_address else config.ip_address
    return f"{scheme}://{host}:{config.port}"


def build_monitors(
    config: ModuleConfig,
    meter: MeterClient,
    outputs: EverestOutputs,
    clock: Clock,
) -> tuple[TemperatureMonitor, HealthMonitor]:
    """The temperature and health monitors the ready loop feeds every cycle."""
    limits = temperature_limits(config)
    poll_s = config.status_poll_interval_ms / 1000.0
    return (
        TemperatureMonitor(limits, outputs, clock),
        HealthMonitor(meter, outputs, clock, poll_interval_s=poll_s),
    )


class Service:
    """One module instance: owns the threads, the adapter and the meter stack."""

    def __init__(
        self,
        module_id: str,
        broker: BrokerSettings,
        *,
        clock: Clock | None = None,
        on_cycle: Callable[[], None] | None = None,
        on_meter_answer: Callable[[], None] | None = None,
        everest_api: bool = False,
    ) -> None:
        self.module_id = module_id
        #: Serve EVerest's external powermeter API (a ``powermeter_API`` bridge named
        #: ``module_id``) instead of the module protocol.
        self.everest_api = everest_api
        self.stop_event = threading.Event()
        self._clock = clock or SystemClock()
        self._on_cycle = on_cycle
        self._on_meter_answer = on_meter_answer
        self._handlers = LateBoundHandlers(self._clock)
        self._broker = broker
        #: Holds the module id on the broker while this instance runs.
        self._guard: InstanceGuard | None = None
        #: Where conditions reach EVerest, once serving; and the conflict with another
        #: instance of this module id reported before that (raised as soon as it can be).
        self._outputs: EverestOutputs | None = None
        self._conflict: str | None = None
        self._conflict_lock = threading.Lock()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT end the service cleanly."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            # Once stopping, a further SIGTERM changes nothing and is ignored: a dying 0.25
            # manager sends its parent-death SIGTERM once per re-parenting of the module,
            # and one arriving while the interpreter exits (its handlers back at the
            # default by then) would end a clean stop with status -15.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _LOGGER.info("signal %s received, shutting down", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run_standalone(self, config: ModuleConfig) -> int:
        """Run from a config file: no manager, start publishing right away.

        Raises ``DuplicateInstance`` when another instance runs with this module id.
        """

        def run() -> int:
            adapter = self._connect(lambda: self._new_adapter(config))
            if adapter is None:
                return 0  # stopped before the broker ever answered
            return self._serve(adapter, config, wait_global_ready=False)

        return self._guarded(run)

    def run_with_manager(self, load: Callable[[list[JsonObject]], ModuleConfig]) -> int:
        """Run under the EVerest manager: config over MQTT, ready handshake, shutdown.

        Raises ``DuplicateInstance`` when another instance runs with this module id.
        """
        if self.everest_api:
            raise ConfigError("--everest-api", "the API mode runs from a config file: lem-dcbm run")

        def run() -> int:
            adapter = self._connect(
                lambda: EverestAdapter(self._broker, self.module_id, self._handlers)
            )
            if adapter is None:
                return 0
            try:
                config = load(adapter.fetch_manager_config())
            except Exception:
                adapter.close()
                raise
            adapter.set_error_namespace(config.error_namespace)
            return self._serve(adapter, config, wait_global_ready=True)

        return self._guarded(run)

    def _guarded(self, run: Callable[[], int]) -> int:
        """Run, then give the module id free."""
        try:
            return run()
        finally:
            if self._guard is not None:
                self._guard.close()

    def _report_other_instance(self, message: str) -> None:
        """Another instance of this module id answers: raise it, and keep serving.

        Stopping would end the transaction this instance may be billing, on the word of
        a broker message anyone can send; EVerest decides what the error means.
        """
        with self._conflict_lock:
            self._conflict = message
            outputs = self._outputs
        if outputs is not None:
            outputs.raise_error(VENDOR_ERROR, DUPLICATE_MODULE_ID, message, "High")

    def _other_instance_gone(self) -> None:
        with self._conflict_lock:
            self._conflict = None
            outputs = self._outputs
        if outputs is not None:
            outputs.clear_error(VENDOR_ERROR, DUPLICATE_MODULE_ID)

    def _conditions_to(self, outputs: EverestOutputs) -> None:
        """From now on raise conditions on ``outputs``; one reported before is raised now."""
        with self._conflict_lock:
            self._outputs = outputs
            conflict = self._conflict
        if conflict is not None:
            outputs.raise_error(VENDOR_ERROR, DUPLICATE_MODULE_ID, conflict, "High")

    def _claim(self) -> None:
        """Take the module id before its MQTT client id connects (which would evict another)."""
        if self._guard is None:
            guard = InstanceGuard(
                self._broker,
                self.module_id,
                on_conflict=self._report_other_instance,
                on_resolved=self._other_instance_gone,
            )
            guard.claim(BROKER_CONNECT_TIMEOUT_S)
            self._guard = guard

    def _new_adapter(self, config: ModuleConfig) -> PowermeterAdapter:
        """The adapter of the mode asked for: the external API, or the module protocol."""
        if self.everest_api:
            # Imported only in this mode: the module protocol's run does without it.
            from lem_dcbm.everest_api.adapter import ApiAdapter

            return ApiAdapter(
                self._broker,
                self.module_id,
                self._handlers,
                clock=self._clock,
                reply_prefixes=config.api_reply_prefixes,
            )
        return EverestAdapter(
            self._broker, self.module_id, self._handlers, error_namespace=config.error_namespace
        )

    def _connect(self, new_adapter: Callable[[], AdapterT]) -> AdapterT | None:
        """Claim the module id, then connect, retrying until the broker answers or a stop.

        Raises ``DuplicateInstance`` when another instance holds the module id.
        """
        waited = 0
        reported = ""

        def attempt() -> AdapterT:
            nonlocal waited, reported
            try:
                self._claim()
                adapter = new_adapter()
                adapter.connect(timeout_s=BROKER_CONNECT_TIMEOUT_S)
            except BrokerUnavailable as err:
                policy = _broker_policy(err)
                how = f"every {policy.max_delay_s:.0f} s"
                if policy is BROKER_REFUSED_RETRY:
                    how = f"with backoff up to {policy.max_delay_s:.0f} s"
                # One line per kind of failure, not one per attempt.
                if str(err) != reported:
                    reported = str(err)
                    _LOGGER.error("%s; retrying %s", err, how)
                waited += 1
                raise
            return adapter

        if self.stop_event.is_set():
            return None
        try:
            adapter = BROKER_RETRY.run(
                attempt,
                what="reach the MQTT broker",
                sleep=self.stop_event.wait,
                quiet=True,  # said above, once per kind of failure
                policy_for=_broker_policy,
            )
        except BrokerUnavailable:
            return None  # the service stops
        if waited:
            _LOGGER.info("MQTT broker %s reachable again", self._broker.describe())
        adapter.watch_takeovers(lambda: self._guard is not None and self._guard.connected)
        return adapter

    def _serve(
        self, adapter: PowermeterAdapter, config: ModuleConfig, *, wait_global_ready: bool
    ) -> int:
        directory = journal_directory(config.journal_dir, self.module_id)
        try:
            journal = TransactionJournal(
                directory,
                keep=config.journal_max_transactions,
                max_age_days=config.journal_max_age_days,
            )
        except ConfigError:
            adapter.close()
            raise
        _LOGGER.info("transaction journal in %s", directory)
        outputs = adapter.condition_outputs(config.error_profile)
        self._conditions_to(outputs)
        stack = build_meter_stack(
            config,
            self._clock,
            journal=journal,
            alerts=VendorWarnings(outputs),
            late_records=LateRecordRoad(adapter, self._clock),
            claim=MeterClaim(
                self._broker, self.module_id, address=meter_address(config), outputs=outputs
            ),
            unanswered_stop_asked_again=adapter.unanswered_stop_asked_again,
        )
        temperature, health = build_monitors(config, stack.measurements, outputs, self._clock)
        loop = ReadyLoop(
            stack.controller,
            outputs,
            self._clock,
            LoopTiming(
                interval_s=config.publish_interval_ms / 1000.0,
                init_retries=config.resilience_initial_connection_retries,
                init_retry_delay_s=config.resilience_initial_connection_retry_delay / 1000.0,
            ),
            on_cycle=self._on_cycle,
            on_meter_answer=self._on_meter_answer,
            temperature=temperature,
            health=health,
            on_initialized=lambda: self._handlers.gate.open(stack.controller),
        )
        adapter.on_connected(loop.republish_public_key)
        self._handlers.gate.wait_s = config.startup_command_wait_ms / 1000.0
        parts = RunningParts(stack.controller, (stack.client, stack.measurements), temperature)
        adapter.serve_config_changes(RuntimeConfig(config, parts).change)
        adapter.records_from(lambda tid: _kept_record(journal, tid))
        threading.Thread(
            target=self._forward_shutdown, args=(adapter,), name="shutdown-watch", daemon=True
        ).start()
        adapter.announce_ready()
        if wait_global_ready and not adapter.wait_global_ready(self.stop_event):
            return self._shutdown(adapter, stack, None, command_bound_s(config))
        loop_thread = threading.Thread(
            target=loop.run, args=(self.stop_event,), name="ready-loop", daemon=True
        )
        loop_thread.start()
        threading.Thread(
            target=loop.run_housekeeping,
            args=(self.stop_event,),
            name="housekeeping",
            daemon=True,
        ).start()
        _LOGGER.info("module %s running", self.module_id)
        self.stop_event.wait()
        return self._shutdown(adapter, stack, loop_thread, command_bound_s(config))

    def _forward_shutdown(self, adapter: PowermeterAdapter) -> None:
        """Turn the manager's shutdown message into the service's stop.

        Waits without a timeout (no wake-ups at 1 Hz idle); ``_shutdown`` releases it.
        """
        adapter.shutdown_requested.wait()
        if not self.stop_event.is_set():
            _LOGGER.info("shutdown requested by the manager")
            self.stop_event.set()

    def _shutdown(
        self,
        adapter: PowermeterAdapter,
        stack: MeterStack,
        loop_thread: threading.Thread | None,
        command_wait_s: float,
    ) -> int:
        self.stop_event.set()
        adapter.shutdown_requested.set()  # releases the shutdown watcher
        self._handlers.gate.close()
        stack.controller.interrupt_waits()
        if loop_thread is not None:
            loop_thread.join(timeout=3.0)
        if adapter.command_running:
            # A start or stop the meter may be carrying out: answer it (and journal it)
            # rather than leave EvseManager without an answer.
            _LOGGER.info(
                "waiting up to %.0f s for the command at the meter before shutting down",
                command_wait_s,
            )
        adapter.close(command_wait_s, flush_s=SHUTDOWN_FLUSH_S)
        stack.close()
        _LOGGER.info("module %s stopped", self.module_id)
        return 0
