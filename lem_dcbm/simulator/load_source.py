"""The simulated meter's load taken from MQTT: it meters what a simulated car draws.

In a simulated charger the car's draw is simulated elsewhere (EVerest's ``YetiSimulator``
publishes it as its ``powermeter`` variable once a second). With ``--load-from-mqtt
TOPIC`` the simulator follows that: each message sets the power and voltage, and the
meter's registers integrate the power over its own clock between messages, as the real
meter integrates what flows through it. So the energy in its OCMF records is the energy
the car drew, within the meter's resolution (1 Wh) and one message's delay.

A message is an EVerest ``Powermeter`` object, bare or in the framework's variable
envelope (``{"data": {"data": {...}}, "msg_type": "Var"}`` from the 2026 manager,
``{"data": {...}}`` earlier), or a plain ``{"power_W": ..., "voltage_V": ...}``.
``power_W`` is a number or ``{"total": ...}``; ``voltage_V`` a number or
``{"DC"|"L1": ...}``; without ``power_W``, the power is voltage times current
(``current_A`` as a number or per phase ``L1``..``L3``). Anything else is ignored with a
log line (once per kind), never applied half.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lem_dcbm.errors import LemDcbmError
from lem_dcbm.json_types import JsonMapping

_LOGGER = logging.getLogger(__name__)

#: How deep the framework's envelopes are searched for the ``Powermeter`` object.
MAX_ENVELOPES = 3
PHASES = ("L1", "L2", "L3")


@dataclass(frozen=True, slots=True)
class LoadReading:
    """One reading of the car's draw."""

    power_w: float
    voltage_v: float | None = None


class LoadTarget(Protocol):
    """What a reading is applied to (the simulated meter)."""

    def set_load(
        self,
        power_kw: float | None = None,
        voltage_v: float | None = None,
        temperature_c: float | None = None,
    ) -> None:
        """Change the load; energy so far is integrated at the old power."""
        ...


class LoadMessageError(LemDcbmError, ValueError):
    """A message that carries no usable load."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _powermeter(document: object) -> JsonMapping:
    for _ in range(MAX_ENVELOPES + 1):
        if not isinstance(document, Mapping):
            break
        if "power_W" in document or "voltage_V" in document or "current_A" in document:
            return document
        document = document.get("data")
    raise LoadMessageError("no power_W, voltage_V or current_A in the message")


def _voltage(value: object) -> float | None:
    if isinstance(value, Mapping):
        for key in ("DC", "L1"):
            found = _number(value.get(key))
            if found is not None:
                return found
        return None
    return _number(value)


def _power_from_current(record: Mapping[str, object], voltage: float | None) -> float | None:
    current = record.get("current_A")
    volts = record.get("voltage_V")
    if isinstance(current, Mapping):
        if isinstance(volts, Mapping):
            pairs = [(_number(volts.get(p)), _number(current.get(p))) for p in PHASES]
            if any(v is not None and i is not None for v, i in pairs):
                return sum(v * i for v, i in pairs if v is not None and i is not None)
        current_value = _number(current.get("DC"))
    else:
        current_value = _number(current)
    if current_value is None or voltage is None:
        return None
    return voltage * current_value


def parse_load(payload: bytes) -> LoadReading:
    """The load a message carries; raise ``LoadMessageError`` when it carries none."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoadMessageError(f"not JSON: {exc}") from None
    record = _powermeter(document)
    voltage = _voltage(record.get("voltage_V"))
    power_field = record.get("power_W")
    power = _number(power_field.get("total") if isinstance(power_field, Mapping) else power_field)
    if power is None:
        power = _power_from_current(record, voltage)
    if power is None:
        raise LoadMessageError("neither power_W nor voltage_V with current_A is usable")
    if voltage is not None and voltage <= 0:
        voltage = None  # a reversed or zero voltage is a fault to force, not a load
    return LoadReading(power_w=power, voltage_v=voltage)


class LoadFollower:
    """Applies each message's load to the meter; the MQTT side only hands messages over."""

    def __init__(self, target: LoadTarget) -> None:
        self._target = target
        self._refused: set[str] = set()
        #: Messages applied so far.
        self.applied = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        """Apply one message (called on the MQTT network thread: it only sets two numbers)."""
        try:
            reading = parse_load(payload)
        except LoadMessageError as exc:
            log = _LOGGER.debug if str(exc) in self._refused else _LOGGER.warning
            self._refused.add(str(exc))
            log("ignored a load message on %s: %s", topic, exc)
            return
        self._target.set_load(power_kw=reading.power_w / 1000.0, voltage_v=reading.voltage_v)
        self.applied += 1


class MqttLoadSource:
    """Subscribes to one topic on a broker and feeds a ``LoadFollower``; reconnects alone."""

    def __init__(self, follower: LoadFollower, host: str, port: int, topic: str) -> None:
        self.topic = topic
        self._follower = follower
        self._host = host
        self._port = port
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, clean_session=True)
        self._client.on_connect = self._on_connect
        self._client.on_message = lambda _c, _u, message: follower.on_message(
            message.topic, bytes(message.payload)
        )
        self._client.reconnect_delay_set(1, 10)

    def _on_connect(
        self, client: mqtt.Client, _userdata: object, _flags: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            _LOGGER.warning("load broker %s:%d refused: %s", self._host, self._port, reason)
            return
        client.subscribe(self.topic, qos=1)
        _LOGGER.info("load from %s on %s:%d", self.topic, self._host, self._port)

    def start(self) -> None:
        """Connect in the background; the subscription follows every (re)connect."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and end the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
