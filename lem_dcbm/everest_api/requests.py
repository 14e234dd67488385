"""The bridge's requests (``e2m/start_transaction``, ``e2m/stop_transaction``), answered once.

Requests run one at a time on a worker thread, in arrival order, as in the module
protocol (:mod:`lem_dcbm.everest.commands`). Each is answered on its ``headers.replyTo``
topic with a ``StartTransactionReply`` or ``StopTransactionReply``; a bad payload gets
``UNEXPECTED_ERROR`` with the reason. A request without a usable ``replyTo`` is still
carried out when it is valid (the API says so) and is otherwise dropped; both are logged,
the drops once (then at debug level), so a flood cannot fill the log. No input ends the
worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from lem_dcbm.core.ports import PowermeterHandlers
from lem_dcbm.errors import shown
from lem_dcbm.everest import results, shapes
from lem_dcbm.everest.bus import Message
from lem_dcbm.everest.serial_worker import SerialWorker
from lem_dcbm.everest_api import codecs
from lem_dcbm.everest_api.topics import REQUESTS, ApiTopics, reply_topic_allowed
from lem_dcbm.json_types import JsonObject
from lem_dcbm.request_limits import MAX_PAYLOAD_BYTES, MAX_ROUTABLE_BYTES, MAX_WAITING

_LOGGER = logging.getLogger(__name__)
_EXCERPT_BYTES = 120

Publish = Callable[[str, bytes], object]


class RequestWorker(SerialWorker[Message]):
    """Carries out the bridge's requests and publishes each reply once."""

    def __init__(
        self,
        topics: ApiTopics,
        handlers: PowermeterHandlers,
        publish: Publish,
        *,
        refusal: Callable[[], str | None] = lambda: None,
        unanswered_stop: Callable[[str], None] = lambda transaction_id: None,
        reply_prefixes: tuple[str, ...] = (),
    ) -> None:
        self._topics = topics
        #: Where a replyTo may point besides the API's own reply space (``api_reply_topics``).
        self._reply_prefixes = reply_prefixes
        self._handlers = handlers
        self._publish = publish
        self._refusal = refusal
        #: Called with the id of a stop that got a record but had nowhere to send it.
        self._unanswered_stop = unanswered_stop
        super().__init__("api-requests", self.execute, self._refuse_for_shutdown, what="request")
        self._quiet: set[str] = set()

    def topics(self) -> list[str]:
        """The request topics to subscribe to."""
        return [self._topics.e2m(name) for name in REQUESTS]

    def submit(self, message: Message) -> None:
        """Queue a request (on the bus's dispatch thread); refuse it when it cannot wait."""
        if message.retain:
            self._log_once("retained", "ignored a retained message on %s", message.topic)
        elif self.stopping:
            self._refuse_for_shutdown(message)
        elif self.waiting >= MAX_WAITING:
            self._turn_away(message, f"{MAX_WAITING} requests are already waiting; try later")
        else:
            self.put(message)

    # --- the pipeline ----------------------------------------------------------------

    def execute(self, message: Message) -> None:
        """Handle one request completely: decode, validate, run, reply."""
        name = self._topics.e2m_name(message.topic)
        if name not in REQUESTS:
            _LOGGER.warning("ignored a message on %s: no such request", message.topic)
            return
        size = len(message.payload)
        if size > MAX_ROUTABLE_BYTES:
            self._log_once(name, "dropped a %s request of %d bytes unread", name, size)
            return
        try:
            request = codecs.parse_request(message.payload)
            if size > MAX_PAYLOAD_BYTES:
                raise codecs.RequestError(
                    f"payload of {size} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes",
                    request.reply_to,
                )
            if not self._may_reply(name, request.reply_to):
                return
            reply = self._run(name, request)
        except codecs.RequestError as exc:
            self._refuse(name, message, exc)
            return
        if request.reply_to is None:
            _LOGGER.warning(
                "carried out %s without a replyTo topic: no reply sent (%s)",
                name,
                reply.get("error") or reply["status"],
            )
            if name == "stop_transaction" and "signed_meter_value" in reply:
                self._unanswered_stop(codecs.stop_transaction_id(request.payload))
            return
        self._publish(request.reply_to, codecs.encode(reply))

    def _run(self, name: str, request: codecs.ApiRequest) -> JsonObject:
        try:
            if name == "start_transaction":
                value = codecs.start_request(request.payload)
                refused = self._refusal()
                if refused is not None:
                    _LOGGER.warning("refused start_transaction: %s", refused)
                    return results.failed(f"start refused: {refused}")
                started = self._handlers.start_transaction(shapes.transaction_request(value))
                return results.start_response(started)
            transaction_id = codecs.stop_transaction_id(request.payload)
            return results.stop_response(self._handlers.stop_transaction(transaction_id))
        except codecs.RequestError as exc:
            raise codecs.RequestError(exc.reason, request.reply_to) from None
        except Exception as exc:
            _LOGGER.exception("the %s handler failed", name)
            return results.failed(f"{type(exc).__name__}: {exc}")

    def _refuse(self, name: str, message: Message, exc: codecs.RequestError) -> None:
        if exc.reply_to is None:
            excerpt = message.payload[:_EXCERPT_BYTES]
            self._log_once(
                name,
                "dropped a %s request with no usable replyTo (%s): %r",
                name,
                exc.reason,
                excerpt,
            )
            return
        if not self._may_reply(name, exc.reply_to):
            return
        _LOGGER.warning("refused %s: %s", name, exc.reason)
        self._publish(exc.reply_to, codecs.encode(results.failed(exc.reason)))

    def _refuse_for_shutdown(self, message: Message) -> None:
        self._turn_away(message, "the module is shutting down")

    def _turn_away(self, message: Message, reason: str) -> None:
        """Answer a request without running it (when it names where to answer)."""
        try:
            request = codecs.parse_request(message.payload)
        except codecs.RequestError as exc:
            request = codecs.ApiRequest(exc.reply_to, None)
        if request.reply_to is not None and self._may_reply("turned away", request.reply_to):
            self._publish(request.reply_to, codecs.encode(results.failed(reason)))

    def _may_reply(self, name: str, reply_to: str | None) -> bool:
        """False (logged once per kind) for a ``replyTo`` outside the allowed topics.

        Such a request is neither carried out nor answered.
        """
        if reply_to is None or reply_topic_allowed(reply_to, self._topics, self._reply_prefixes):
            return True
        self._log_once(
            f"replyTo {name}",
            "refused a %s request: its replyTo %s is outside the API's reply topics %s# "
            "(config key api_reply_topics)",
            name,
            shown(reply_to),
            self._topics.reply_space,
        )
        return False

    def _log_once(self, key: str, text: str, *args: object) -> None:
        """Warn the first time per ``key``; later ones go to debug (a flood must not fill logs)."""
        if key in self._quiet:
            _LOGGER.debug(text, *args)
            return
        self._quiet.add(key)
        _LOGGER.warning("%s (further ones are logged at debug level)", text % args)
