"""Command dispatch: parse a call, validate it, run its handler, answer the caller.

Two lanes. A call is parsed and validated where it arrives (the bus's dispatch thread):
one that is refused (unparsable, too large, against the schema) is answered at once and
never waits behind a command at the meter. Valid calls run one at a time on one worker
thread, in arrival order: both commands act on the one meter's transaction state, and a
stop must never overtake the start it ends (docs/concurrency.md). The network thread
never waits for the meter. Every request is answered on
``{request topic}/response/{origin}`` when it names an id and an origin; a request that
does not is logged and dropped. No input ends the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from lem_dcbm.everest import envelope, validation
from lem_dcbm.everest.bus import Message
from lem_dcbm.everest.serial_worker import SerialWorker
from lem_dcbm.everest.topics import Topics
from lem_dcbm.everest.validation import InterfaceSchema, own_schema
from lem_dcbm.json_types import JsonObject, JsonValue
from lem_dcbm.request_limits import MAX_PAYLOAD_BYTES, MAX_ROUTABLE_BYTES, MAX_WAITING

_LOGGER = logging.getLogger(__name__)

_EXCERPT_BYTES = 120
#: A start the broker kept for the module's session longer than this (while the module
#: was disconnected or not running) is refused with ``CmdTimeout`` instead of run late:
#: EVerest's framework gives up on a call after 300 s, so its caller no longer waits.
#: A kept call younger than that may still have its caller waiting, and is run.
STALE_CALL_S = 300.0
#: The calls that can expire. A stop is always carried out, however late: it ends only the
#: transaction it names (or, with an empty id, what runs before any later start, since
#: calls are run in the order they were sent), and its record is kept in the journal.
EXPIRING_COMMANDS = frozenset({"start_transaction"})

CommandHandler = Callable[[JsonObject], JsonValue]
Publish = Callable[[str, bytes], object]
#: The interface schema answers are shaped and checked by (it may change at start-up).
SchemaSource = Callable[[], InterfaceSchema]


@dataclass(frozen=True, slots=True)
class _Call:
    """A parsed, validated call waiting for its handler."""

    name: str
    handler: CommandHandler
    request: envelope.CommandRequest


def _not_unicode(value: object, where: str = "") -> str | None:
    """Where a string holds a lone surrogate (JSON can carry one; the meter cannot), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"At /{where.strip('/')} - the string is not valid Unicode (a lone surrogate)"
        return None
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _not_unicode(item, f"{where}/{key}")
        if found:
            return found
    return None


class CommandDispatcher:
    """Runs the commands of one implementation on a dedicated worker thread."""

    def __init__(
        self,
        topics: Topics,
        publish: Publish,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        schema: SchemaSource = own_schema,
        stale_after_s: float = STALE_CALL_S,
    ) -> None:
        self._topics = topics
        self._stale_after_s = stale_after_s
        self._publish = publish
        self._schema = schema
        self._dropped_logged: set[str] = set()
        self._max_payload_bytes = max_payload_bytes
        self._handlers: dict[str, CommandHandler] = {}
        self._worker: SerialWorker[_Call] = SerialWorker(
            "commands", self._run, self._refuse_queued_for_shutdown, what="command"
        )

    def register(self, name: str, handler: CommandHandler) -> None:
        """Serve command ``name`` (declared by the interface) with ``handler(args)``."""
        if name not in validation.command_names():
            raise ValueError(f"the interface declares no command {name!r}")
        self._handlers[name] = handler

    def command_topics(self) -> list[str]:
        """The request topics to subscribe to."""
        return [self._topics.cmd(name) for name in self._handlers]

    @property
    def running(self) -> bool:
        """True while the worker carries out a call."""
        return self._worker.running

    @property
    def waiting(self) -> int:
        """Calls received and not yet started."""
        return self._worker.waiting

    def start(self) -> None:
        """Start the worker thread."""
        self._worker.start()

    def submit(self, message: Message) -> None:
        """Screen a request and queue it for the worker (called on the bus's dispatch thread).

        A refused request is answered here at once, whatever the worker is busy with.
        A retained message is never a call: EVerest publishes commands unretained, and a
        retained one would run again at every (re)connect (a retained ``stop("")`` would
        end whatever session runs). It is logged and dropped unanswered.
        """
        if message.retain:
            _LOGGER.warning(
                "ignored a retained message on %s: commands are never retained", message.topic
            )
            return
        queued = message.queued_up_to_s
        expires = self._topics.command_name(message.topic) in EXPIRING_COMMANDS
        if expires and queued is not None and queued > self._stale_after_s:
            self._refuse_stale(message, queued)
            return
        if self._worker.stopping:
            self._refuse_for_shutdown(message)
            return
        call = self._screen(message)
        if call is None:
            return
        if self._worker.waiting >= MAX_WAITING:
            # A flood must not queue up work for hours: the caller hears at once.
            self._answer_call_error(
                call,
                "HandlerException",
                f"{MAX_WAITING} commands are already waiting; try again later",
            )
        else:
            self._worker.put(call)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the call in progress; answer the queued ones with ``Shutdown``."""
        self._worker.stop(timeout_s)

    # --- the pipeline ----------------------------------------------------------------

    def execute(self, message: Message) -> None:
        """Handle one request completely, on this thread: screen, run, validate, answer."""
        call = self._screen(message)
        if call is not None:
            self._run(call)

    def _screen(self, message: Message) -> _Call | None:
        """Parse and validate a request; answer (or drop) it and return None when refused.

        No meter round trip: this is what a call may be refused for without waiting.
        """
        name = self._topics.command_name(message.topic)
        handler = self._handlers.get(name or "")
        if name is None or handler is None:
            _LOGGER.warning("ignored a message on %s: no such command", message.topic)
            return None
        size = len(message.payload)
        if size > MAX_ROUTABLE_BYTES:
            _LOGGER.warning(
                "dropped a %s request of %d bytes unread (requests are limited to %d bytes)",
                name,
                size,
                self._max_payload_bytes,
            )
            return None
        try:
            request = envelope.parse_command(message.payload)
        except envelope.CommandParseError as exc:
            if size > self._max_payload_bytes:
                exc = self._too_large(exc.call_id, exc.origin, size)
            self._refuse(name, message, exc)
            return None
        if size > self._max_payload_bytes:
            self._refuse(name, message, self._too_large(request.call_id, request.origin, size))
            return None
        problem = validation.check_arguments(name, request.args) or _not_unicode(request.args)
        if problem is not None:
            _LOGGER.warning("refused %s from %s: %s", name, request.origin, problem)
            self._answer_error(
                name, request.call_id, request.origin, "SchemaValidationError", problem
            )
            return None
        return _Call(name, handler, request)

    def _too_large(
        self, call_id: str | None, origin: str | None, size: int
    ) -> envelope.CommandParseError:
        return envelope.CommandParseError(
            "MessageParsingError",
            f"payload of {size} bytes exceeds the limit of {self._max_payload_bytes} bytes",
            call_id,
            origin,
        )

    def _run(self, call: _Call) -> None:
        name, request = call.name, call.request
        try:
            answer = call.handler(request.args)
        except Exception as exc:
            _LOGGER.exception("the %s handler failed for a call from %s", name, request.origin)
            message = f"{type(exc).__name__}: {exc}"
            self._answer_error(name, request.call_id, request.origin, "HandlerException", message)
            return
        retval = self._shaped(name, answer)
        problem = self._schema().check_result(name, retval)
        if problem is not None:
            # A bug on this side: the caller still gets the value, flagged as invalid.
            _LOGGER.error("the result of %s does not match the interface: %s", name, problem)
            payload = envelope.error_result_payload(
                request.call_id,
                self._topics.module_id,
                "SchemaValidationError",
                problem,
                retval=retval,
                with_retval=True,
            )
        else:
            payload = envelope.result_payload(request.call_id, self._topics.module_id, retval)
        self._publish(self._topics.cmd_response(name, request.origin), payload)

    def _shaped(self, name: str, retval: object) -> object:
        """``retval`` without the properties the schema in use forbids (logged once each)."""
        schema = self._schema()
        shaped, dropped = schema.shape_result(name, retval)
        for path in dropped:
            if f"{name}{path}" not in self._dropped_logged:
                self._dropped_logged.add(f"{name}{path}")
                _LOGGER.info("%s answers without %s (not allowed by %s)", name, path, schema.source)
        return shaped

    def _refuse(self, name: str, message: Message, exc: envelope.CommandParseError) -> None:
        if exc.call_id is None or exc.origin is None:
            _LOGGER.warning(
                "dropped a %s request that names no id and origin to answer to (%s): %r",
                name,
                exc.message,
                message.payload[:_EXCERPT_BYTES],
            )
            return
        _LOGGER.warning("refused %s from %s: %s", name, exc.origin, exc.message)
        self._answer_error(name, exc.call_id, exc.origin, exc.error_type, exc.message)

    def _answer_error(
        self, name: str, call_id: str, origin: str, error_type: str, text: str
    ) -> None:
        payload = envelope.error_result_payload(call_id, self._topics.module_id, error_type, text)
        self._publish(self._topics.cmd_response(name, origin), payload)

    def _answer_call_error(self, call: _Call, error_type: str, text: str) -> None:
        self._answer_error(call.name, call.request.call_id, call.request.origin, error_type, text)

    def _refuse_for_shutdown(self, message: Message) -> None:
        self._turn_away(message, "Shutdown", "the module is shutting down")

    def _refuse_stale(self, message: Message, queued_s: float) -> None:
        """Answer a start the broker kept too long with ``CmdTimeout``; never run it."""
        how_long = (
            "since before this module started"
            if queued_s == float("inf")
            else f"for up to {queued_s:.0f} s"
        )
        reason = (
            f"not run: the broker kept this call {how_long} while the module was away "
            f"(limit {self._stale_after_s:g} s); its caller has given up on it, call again"
        )
        _LOGGER.warning("refused a call on %s: %s", message.topic, reason)
        self._turn_away(message, "CmdTimeout", reason)

    def _turn_away(self, message: Message, error_type: str, reason: str) -> None:
        """Answer a call without running it (when it names where to answer)."""
        name = self._topics.command_name(message.topic) or ""
        try:
            request = envelope.parse_command(message.payload)
        except envelope.CommandParseError:
            return
        self._answer_error(name, request.call_id, request.origin, error_type, reason)

    def _refuse_queued_for_shutdown(self, call: _Call) -> None:
        self._answer_call_error(call, "Shutdown", "the module is shutting down")
