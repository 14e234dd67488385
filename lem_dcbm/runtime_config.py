"""The configuration in use, and its changes while the module runs (2026 framework).

``config_*`` functions turn a ``ModuleConfig`` into what each running part takes; the
service builds the parts with them at start-up, and ``RuntimeConfig`` hands the same
values to the running parts when the manager changes a key declared
``mutability: ReadWrite``. Any other key needs a new connection or is read only at
start-up: a valid value for it is answered ``RebootRequired`` (the manager keeps it for
the next start), a bad value for any key ``Rejected`` with the start-up check's reason.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from lem_dcbm.config import ModuleConfig, config_with_change, runtime_keys
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.temperature_monitor import TemperatureLimits, TemperatureMonitor
from lem_dcbm.core.timesync import ClockSettings, NtpServer
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.errors import ConfigError
from lem_dcbm.meter.client import MeterClient

_LOGGER = logging.getLogger(__name__)

#: The answers to a change, in the framework's words.
ChangeStatus = Literal["Accepted", "Rejected", "RebootRequired"]
#: Keys whose new value only a new connection to the meter can use.
CONNECTION_KEYS = frozenset({"ip_address", "port", "interface", "meter_tls_certificate"})


class ChangeAnswer(NamedTuple):
    """The answer to one change: its status and, unless accepted, why."""

    status: ChangeStatus
    reason: str = ""


def controller_settings(config: ModuleConfig) -> ControllerSettings:
    """What the controller takes from ``config``."""
    return ControllerSettings(
        start=StartSettings(
            tariff_id=config.tariff_id,
            cable_id=config.cable_id,
            sc=config.SC,
            uv=config.UV,
            ud=config.UD,
        ),
        api_version=config.api_version,
        identification_type=config.IT,
        transaction_retries=config.resilience_transaction_request_retries,
        transaction_retry_delay_s=config.resilience_transaction_request_retry_delay / 1000.0,
        signed_start_value=config.signed_start_value,
        # Never longer than the command timeout, and short enough that an unreachable
        # meter is reported as a CommunicationFault within about 2 s.
        measurement_timeout_s=min(config.command_timeout_ms / 1000.0, 2.0),
        stop_record_wait_s=config.stop_record_wait_ms / 1000.0,
        min_transaction_s=config.meter_min_transaction_ms / 1000.0,
        stop_minimum_wait_s=config.stop_minimum_wait_ms / 1000.0,
        record_ride_s=config.record_on_powermeter_ms / 1000.0,
        record_identity_checks="report" if config.record_identity_checks == "report" else "enforce",
    )


def ntp_servers(config: ModuleConfig) -> tuple[NtpServer, ...]:
    """The NTP servers the meter is given: none while the first is empty (as the C++ module)."""
    if not config.ntp_server_1_ip_addr:
        return ()
    first = NtpServer(config.ntp_server_1_ip_addr, config.ntp_server_1_port)
    if not config.ntp_server_2_ip_addr:
        return (first,)
    return (first, NtpServer(config.ntp_server_2_ip_addr, config.ntp_server_2_port))


def clock_settings(config: ModuleConfig) -> ClockSettings:
    """The NTP servers, timezone and DST rules the time sync writes."""
    return ClockSettings(
        timezone=config.meter_timezone,
        dst=json.loads(config.meter_dst),
        ntp_servers=ntp_servers(config),
    )


def temperature_limits(config: ModuleConfig) -> TemperatureLimits:
    """The temperature levels the monitor judges readings by."""
    return TemperatureLimits(
        warning_level_c=config.temperature_warning_level_C,
        error_level_c=config.temperature_error_level_C,
        hysteresis_k=config.temperature_hysteresis_K,
        min_time_s=config.temperature_min_time_as_valid_ms / 1000.0,
    )


@dataclass(frozen=True)
class RunningParts:
    """The parts a runtime change reaches."""

    controller: MeterController
    clients: tuple[MeterClient, ...]
    temperature: TemperatureMonitor


class RuntimeConfig:
    """The configuration in use; validates and applies the manager's changes to it.

    Called on the MQTT dispatch thread: it never waits for the meter or for a command
    in progress (see ``MeterController.reconfigure``).
    """

    def __init__(
        self, config: ModuleConfig, parts: RunningParts, mutable: Iterable[str] | None = None
    ) -> None:
        self._config = config
        self._parts = parts
        self._mutable = frozenset(runtime_keys() if mutable is None else mutable)
        self._lock = threading.Lock()

    @property
    def config(self) -> ModuleConfig:
        """The configuration in use now."""
        return self._config

    def change(self, key: str, value: object) -> ChangeAnswer:
        """Validate ``key = value`` as start-up does; apply it now if ``key`` allows it."""
        with self._lock:
            try:
                changed = config_with_change(self._config, key, value)
            except ConfigError as err:
                _LOGGER.warning("refused a change of %s: %s", key, err)
                return ChangeAnswer("Rejected", str(err))
            if key not in self._mutable:
                why = (
                    "needs a new connection to the meter"
                    if key in CONNECTION_KEYS
                    else "is read only at start-up"
                )
                _LOGGER.info("a change of %s %s; it applies after a restart", key, why)
                return ChangeAnswer(
                    "RebootRequired", f"config key '{key}' {why}; it applies after a restart"
                )
            self._apply(changed)
            self._config = changed
            shown = repr(getattr(changed, key))[:80]  # no runtime key is a secret
            _LOGGER.info("config key %s changed to %s at run time", key, shown)
            return ChangeAnswer("Accepted")

    def _apply(self, config: ModuleConfig) -> None:
        parts = self._parts
        parts.controller.reconfigure(controller_settings(config), clock_settings(config))
        parts.temperature.set_limits(temperature_limits(config))
        for client in parts.clients:
            client.set_timeout(config.command_timeout_ms / 1000.0)
