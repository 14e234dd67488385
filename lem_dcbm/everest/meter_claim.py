"""One meter, one module: a retained claim per meter serial, watched while the module runs.

Two module ids configured on one meter (a copy-pasted config block, two EVSEs pointed at
one address, or one meter reached under two addresses) each believe the meter is theirs.
The instance guard cannot see that: it knows module ids, not meters. So once the meter
told its serial, and before the module touches a transaction, it publishes on a
connection of its own, retained with QoS 1,

    {prefix}lem_dcbm/meters/{serial}/{module_id, percent-encoded}

(empty, retained, as its will and when it stops: the claim goes with the module) and
subscribes to ``{prefix}lem_dcbm/meters/{serial}/+``. When its own claim comes back, every
claim the broker kept came before it; any of another module id is logged in one line
naming both modules, then and whenever one appears later.

A claim is a message on the broker, which anybody can send: it is a warning
(``VendorWarning``/``MeterClaimedTwice``, raised as the error profile allows) and never
makes the module exit or refuse its own transactions. What it changes: a transaction the
journal does not hold is then never taken for this EVSE's own (see ``core.ownership``).
The foreign transaction that refuses a start, a fact the meter itself reports, is raised
here too, as ``VendorError``/``ForeignTransaction``: this EVSE cannot bill until it ends.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from urllib.parse import quote, unquote

from lem_dcbm.config import BrokerSettings, normalize_prefix
from lem_dcbm.core.ownership import FOREIGN_TRANSACTION
from lem_dcbm.core.ports import EverestOutputs
from lem_dcbm.everest.bus import SIDE_KEEPALIVE_S, BrokerUnavailable, Message, MqttBus

_LOGGER = logging.getLogger(__name__)

#: Raised (as ``VendorWarning``) while another module id claims this module's meter.
CLAIMED_TWICE = "MeterClaimedTwice"
#: How long the claim waits for its own echo (every kept claim comes before it).
SETTLE_S = 3.0
#: A claim's payload is read only up to this size; a longer one still claims, unread.
MAX_CLAIM_BYTES = 1024


def encode_segment(text: str) -> str:
    """``text`` as one topic level: every character outside ``[A-Za-z0-9._~-]`` escaped."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def describe_claim(payload: bytes) -> str:
    """What a claim says of its module (address, pid, host), or why it says nothing."""
    if len(payload) > MAX_CLAIM_BYTES:
        return f"a claim of {len(payload)} bytes, not read"
    try:
        fields = json.loads(payload)
    except (ValueError, RecursionError):
        return "a claim that is not JSON"
    if not isinstance(fields, dict):
        return "a claim that is not a JSON object"
    told = [f"{key} {_short(fields[key])}" for key in ("address", "pid", "host") if key in fields]
    return ", ".join(told) or "a claim that says nothing more"


def _short(value: object) -> str:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else "?"
    return text if len(text) <= 64 else text[:61] + "..."


class MeterClaim:
    """This module's claim on its meter, the other modules claiming it, and their errors."""

    def __init__(
        self,
        broker: BrokerSettings,
        module_id: str,
        *,
        address: str,
        outputs: EverestOutputs | None = None,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.module_id = module_id
        self._broker = broker
        self._prefix = normalize_prefix(broker.prefix)
        self._address = address
        self._outputs = outputs
        self._settle_s = settle_s
        self._token = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._meter_id = ""
        self._bus: MqttBus | None = None
        self._echo = threading.Event()
        #: Other module ids claiming the meter now, with what their claim says.
        self._others: dict[str, str] = {}
        self._foreign_raised = False

    def topic(self, meter_id: str, module_id: str) -> str:
        """The retained claim topic of ``module_id`` on the meter ``meter_id``."""
        base = f"{self._prefix}lem_dcbm/meters/{encode_segment(meter_id)}"
        return f"{base}/{encode_segment(module_id)}"

    # -- MeterOwners --------------------------------------------------------------------

    def claim(self, meter_id: str) -> None:
        """Claim ``meter_id``; logs (never raises) when the broker cannot be reached."""
        with self._lock:
            if meter_id == self._meter_id:
                return
        self._release()
        own = self.topic(meter_id, self.module_id)
        bus = MqttBus(
            self._broker,
            f"lemdcbm-m-{self._token}",
            clean_session=True,
            will=(own, b""),
            keepalive_s=SIDE_KEEPALIVE_S,
            report_link=False,  # the module's own connection reports the broker's state
        )
        with self._lock:
            self._meter_id = meter_id
            self._bus = bus
            self._others.clear()
            self._echo.clear()
        bus.subscribe(own.rsplit("/", 1)[0] + "/+", self._on_claim)
        bus.on_connected(lambda: self._announce(bus, own))
        try:
            bus.connect(self._settle_s)
        except BrokerUnavailable as err:
            _LOGGER.warning(
                "module %s: meter %s not claimed on the broker (%s); another module "
                "configured on this meter shows once the broker answers",
                self.module_id,
                meter_id,
                err,
            )
            return
        if not self._echo.wait(self._settle_s):
            _LOGGER.warning(
                "module %s: the broker did not return this module's claim on meter %s within "
                "%g s; other modules on it show when their claims arrive",
                self.module_id,
                meter_id,
                self._settle_s,
            )
            return
        _LOGGER.info(
            "module %s: meter %s claimed%s",
            self.module_id,
            meter_id,
            "" if self.others() else "; no other module claims it",
        )

    def others(self) -> tuple[str, ...]:
        """Other module ids that claim this module's meter now."""
        with self._lock:
            return tuple(sorted(self._others))

    def foreign_transaction(self, message: str | None) -> None:
        """Raise (or with None clear) ``VendorError``/``ForeignTransaction``."""
        if self._outputs is None:
            return
        if message is not None:
            self._foreign_raised = True
            self._outputs.raise_error("VendorError", FOREIGN_TRANSACTION, message, "High")
        elif self._foreign_raised:
            self._foreign_raised = False
            self._outputs.clear_error("VendorError", FOREIGN_TRANSACTION)

    # -- life -----------------------------------------------------------------------------

    def close(self) -> None:
        """Withdraw the claim and disconnect."""
        self._release()

    def _release(self) -> None:
        with self._lock:
            bus, meter_id = self._bus, self._meter_id
            self._bus, self._meter_id = None, ""
        if bus is None:
            return
        bus.publish(self.topic(meter_id, self.module_id), b"", retain=True, drop_when_offline=True)
        bus.close(timeout_s=2.0)

    def _announce(self, bus: MqttBus, own: str) -> None:
        """Publish the claim (after every connect: a clean session lost the will's effect)."""
        payload = {
            "module_id": self.module_id,
            "address": self._address,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "instance": self._token,
        }
        bus.publish(own, json.dumps(payload).encode(), retain=True)

    def _on_claim(self, message: Message) -> None:
        with self._lock:
            meter_id = self._meter_id
        claimant = unquote(message.topic.rsplit("/", 1)[-1], errors="replace")
        if claimant == self.module_id:
            if self._token.encode() in message.payload:
                self._echo.set()
            return
        if not message.payload:
            self._withdrawn(meter_id, claimant)
            return
        said = describe_claim(message.payload)
        with self._lock:
            known = self._others.get(claimant) == said
            self._others[claimant] = said
        if known:
            return
        line = (
            f"meter {meter_id} is claimed by two modules: this one, {self.module_id} "
            f"(address {self._address}), and {claimant} ({said}); neither stops or bills a "
            "transaction the other started, and only one can meter its EVSE: give each "
            "EVSE its own meter"
        )
        _LOGGER.error("%s", line)
        if self._outputs is not None:
            # Short: the line above says it all, and a profile that only logs repeats this.
            told = f"meter {meter_id} is also claimed by module {claimant}"
            self._outputs.raise_error("VendorWarning", CLAIMED_TWICE, told, "Low")

    def _withdrawn(self, meter_id: str, claimant: str) -> None:
        with self._lock:
            gone = self._others.pop(claimant, None) is not None
            left = bool(self._others)
        if not gone:
            return
        _LOGGER.info(
            "module %s: module %s no longer claims meter %s", self.module_id, claimant, meter_id
        )
        if not left and self._outputs is not None:
            self._outputs.clear_error("VendorWarning", CLAIMED_TWICE)
