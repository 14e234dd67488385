"""The topics of the powermeter API, as the framework's ``Topics`` builder makes them.

``everest_api/{version}/{api type}/{module id}/e2m/{name}`` (after EVerest's external
prefix) carries EVerest to the module,
``.../m2e/{name}`` the module to EVerest. Pure functions, no broker.
"""

from __future__ import annotations

from dataclasses import dataclass

API_BASE = "everest_api"
API_VERSION = 1
API_TYPE = "powermeter"
#: EVerest to module.
E2M = "e2m"
#: Module to EVerest.
M2E = "m2e"
#: The requests the bridge sends, each with ``headers.replyTo``.
REQUESTS = ("start_transaction", "stop_transaction")
HEARTBEAT = "heartbeat"
POWERMETER_VALUES = "powermeter_values"
PUBLIC_KEY_OCMF = "public_key_ocmf"
COMMUNICATION_CHECK = "communication_check"


@dataclass(frozen=True)
class ApiTopics:
    """Every topic of one ``powermeter_API`` bridge, named by its EVerest module id.

    The bridge talks on EVerest's external MQTT, whose topics carry EVerest's external
    prefix (``mqtt_external_prefix``, ``EV_MQTT_EXTERNAL_PREFIX``; empty by default).
    """

    module_id: str
    external_prefix: str = ""

    @property
    def base(self) -> str:
        """``{external prefix}everest_api/1/powermeter/{module_id}``."""
        prefix = self.external_prefix.rstrip("/") + "/" if self.external_prefix else ""
        return f"{prefix}{API_BASE}/{API_VERSION}/{API_TYPE}/{self.module_id}"

    def e2m(self, name: str) -> str:
        """A topic EVerest publishes on (the module subscribes)."""
        return f"{self.base}/{E2M}/{name}"

    def m2e(self, name: str) -> str:
        """A topic the module publishes on."""
        return f"{self.base}/{M2E}/{name}"

    def reply(self, token: str) -> str:
        """A reply topic in the framework's form (``.../m2e/reply/{uuid}``), for callers."""
        return f"{self.base}/{M2E}/reply/{token}"

    @property
    def reply_space(self) -> str:
        """Where the framework's bridge asks for replies: ``{base}/m2e/reply/``."""
        return f"{self.base}/{M2E}/reply/"

    def e2m_name(self, topic: str) -> str | None:
        """The name of an ``e2m`` topic, or None for any other topic."""
        head = f"{self.base}/{E2M}/"
        if not topic.startswith(head):
            return None
        name = topic[len(head) :]
        return name if name and "/" not in name else None


def reply_topic(reply_to: str, external_prefix: str) -> str:
    """Where the bridge listens for the reply to a request with ``headers.replyTo``.

    EVerest's request helper (``AsyncApiRequestReply``) writes ``replyTo`` without the
    external prefix but subscribes to it through the framework's external MQTT, which puts
    the prefix before every topic: with ``mqtt_external_prefix`` set, the reply belongs
    under the prefix. A ``replyTo`` that already carries the prefix is used as it is, and
    so is one outside the API's topics (a reply topic the deployment allowed by name in
    ``api_reply_topics`` means exactly that topic).
    """
    prefix = external_prefix.rstrip("/") + "/" if external_prefix else ""
    if not prefix or reply_to.startswith(prefix) or not reply_to.startswith(f"{API_BASE}/"):
        return reply_to
    return prefix + reply_to


#: In ``api_reply_topics``: any topic may be a reply topic.
ANY_TOPIC = "#"


def reply_topic_allowed(topic: str, topics: ApiTopics, allowed: tuple[str, ...] = ()) -> bool:
    """True when a request's ``replyTo`` may be published to.

    Only the API's own reply space (with or without the external prefix, as the
    framework's ``Topics`` writes it) and the prefixes in ``allowed`` (config key
    ``api_reply_topics``): otherwise a request could make the module publish into
    another module's command topics.
    """
    if ANY_TOPIC in allowed:
        return True
    own = (topics.reply_space, ApiTopics(topics.module_id).reply_space)
    return topic.startswith(own + allowed)


def status_topic(external_prefix: str, module_id: str) -> str:
    """The module's own retained status, beside its late records (``lem_dcbm/{id}/...``)."""
    prefix = external_prefix.rstrip("/") + "/" if external_prefix else ""
    return f"{prefix}lem_dcbm/{module_id}/status"
