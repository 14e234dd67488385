"""Start-up with the EVerest manager: configuration, metadata, readiness, shutdown.

Both framework generations end their process when they receive a ``msg_type`` they do
not know, so the module must not send one generation's names to the other. It tells
them apart without sending anything: before it starts modules, the manager publishes
retained definition topics, among them ``{prefix}settings``, whose envelope carries
``ConfigurationResponse`` (2026) or ``GetConfigResponse`` (0.25). When no such message
arrives in time the module assumes the 2026 framework; a caller that knows better can
name the generation. The answer to the configuration request then settles it: the
metadata is sent with the same names as that answer.
"""

from __future__ import annotations

import logging
import threading
import time

from lem_dcbm import MODULE_NAME
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest import envelope
from lem_dcbm.everest.bus import Message, MqttBus
from lem_dcbm.everest.envelope import Generation
from lem_dcbm.everest.topics import Topics

_LOGGER = logging.getLogger(__name__)

#: The module's name as the manager knows it when it does not say otherwise.
DEFAULT_MODULE_NAME = MODULE_NAME
#: How long to wait for the retained settings that tell the framework generation.
SETTINGS_WAIT_S = 1.5
#: The request is repeated this often while no answer comes (the 2026 framework retries too).
REQUEST_REPEAT_S = 2.0
_POLL_S = 0.2


class ManagerError(LemDcbmError):
    """The manager did not answer the configuration request, or refused it."""


class ManagerLink:
    """The manager side of one module instance."""

    def __init__(
        self,
        bus: MqttBus,
        topics: Topics,
        *,
        module_name: str = DEFAULT_MODULE_NAME,
        provides: dict[str, str] | None = None,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._module_name = module_name
        self._provides = provides or {topics.impl_id: "powermeter"}
        #: Set by a message on ``{prefix}shutdown``.
        self.shutdown_requested = threading.Event()
        #: Set by the first ``GlobalReady``.
        self.global_ready = threading.Event()
        self._settings_seen = threading.Event()
        self._settings_generation: Generation | None = None
        self._answered = threading.Event()
        self._response: envelope.ConfigResponse | None = None
        self._refusal: str | None = None
        #: The generation the handshake settled on (None until known).
        self.generation: Generation | None = None
        bus.subscribe(topics.settings, self._on_settings)
        bus.subscribe(topics.config_response, self._on_config_response)
        bus.subscribe(topics.global_ready, self._on_global_ready)
        bus.subscribe(topics.shutdown, self._on_shutdown)

    # --- steps ---------------------------------------------------------------------

    def detect_generation(self, wait_s: float = SETTINGS_WAIT_S) -> Generation:
        """The generation from the manager's retained settings, else the 2026 framework."""
        if self._settings_seen.wait(wait_s) and self._settings_generation is not None:
            return self._settings_generation
        _LOGGER.info(
            "no retained %s from the manager within %.1f s; using the 2026 framework's names",
            self._topics.settings,
            wait_s,
        )
        return Generation.FRAMEWORK_2026

    def fetch_config(
        self, timeout_s: float = 10.0, generation: Generation | None = None
    ) -> envelope.ConfigResponse:
        """Ask for the module's configuration and wait for the answer."""
        deadline = time.monotonic() + timeout_s
        if generation is None:
            # Leave most of the time to the request itself.
            generation = self.detect_generation(min(SETTINGS_WAIT_S, timeout_s / 4))
        self.generation = generation
        request = envelope.config_request_payload(self._topics.module_id, generation)
        while True:
            self._bus.publish(self._topics.config_request, request)
            wait = min(REQUEST_REPEAT_S, deadline - time.monotonic())
            if wait > 0 and self._answered.wait(wait):
                break
            if time.monotonic() >= deadline:
                raise ManagerError(
                    f"the EVerest manager sent no configuration within {timeout_s:g} s "
                    f"(asked with {generation.request_type} on {self._topics.config_request}, "
                    f"listening on {self._topics.config_response})"
                )
        if self._refusal is not None or self._response is None:
            raise ManagerError(
                f"the EVerest manager refused the configuration request: {self._refusal}"
            )
        self.generation = self._response.generation
        if self._response.module_name:
            self._module_name = self._response.module_name
        return self._response

    def announce(self) -> None:
        """Publish the metadata and the module's readiness."""
        generation = self.generation
        if generation is None:
            generation = self._settings_generation or Generation.FRAMEWORK_2026
        self._bus.publish(
            self._topics.metadata,
            envelope.metadata_payload(self._module_name, self._provides, generation),
        )
        self._bus.publish(self._topics.module_ready, envelope.module_ready_payload())
        _LOGGER.info("announced module %s (%s) as ready", self._topics.module_id, self._module_name)

    def wait_global_ready(self, stop: threading.Event) -> bool:
        """Wait for ``GlobalReady``; False when ``stop`` or a shutdown request comes first."""
        while not self.global_ready.wait(_POLL_S):
            if stop.is_set() or self.shutdown_requested.is_set():
                return False
        return True

    # --- handlers (dispatch worker) ------------------------------------------------------

    def _on_settings(self, message: Message) -> None:
        if not message.payload:
            return  # the manager clears its retained topics before global ready
        try:
            msg_type = envelope.decode(message.payload).msg_type
        except envelope.EnvelopeError:
            return
        generation = Generation.from_response_type(msg_type)
        if generation is not None:
            self._settings_generation = generation
            self._settings_seen.set()

    def _on_config_response(self, message: Message) -> None:
        if self._answered.is_set():
            return
        try:
            self._response = envelope.parse_config_response(envelope.decode(message.payload))
        except envelope.EnvelopeError as exc:
            self._refusal = str(exc)
        self._answered.set()

    def _on_global_ready(self, message: Message) -> None:
        try:
            received = envelope.decode(message.payload)
        except envelope.EnvelopeError as exc:
            _LOGGER.warning("ignored a message on %s: %s", message.topic, exc)
            return
        if received.msg_type != envelope.GLOBAL_READY or received.data is not True:
            _LOGGER.warning("ignored a message on %s: not GlobalReady", message.topic)
            return
        if self.global_ready.is_set():
            _LOGGER.debug("ignored a repeated GlobalReady")
            return
        _LOGGER.info("every module is ready")
        self.global_ready.set()

    def _on_shutdown(self, message: Message) -> None:
        # The 2026 manager sends the bare text "true"; any message here means shut down.
        if not self.shutdown_requested.is_set():
            _LOGGER.info("the EVerest manager asks for shutdown")
        self.shutdown_requested.set()
