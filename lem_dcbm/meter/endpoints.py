"""The meter's REST paths and the HTTP status each call must answer with."""

from __future__ import annotations

#: API generations: ``v2`` adds fields to legal, ocmf and livemeasure on newer firmware.
API_VERSIONS: tuple[str, ...] = ("v1", "v2")

#: Endpoints that exist only under ``/v1`` whatever the firmware.
STATUS = "/v1/status"
SETTINGS = "/v1/settings"
CERTIFICATE = "/v1/certificate"
LOGBOOK = "/v1/logbook"

#: Expected answers.
OK = 200
CREATED = 201
NOT_FOUND = 404


def livemeasure(api_version: str) -> str:
    """``/v1/livemeasure`` or ``/v2/livemeasure``."""
    return f"/{api_version}/livemeasure"


def legal(api_version: str) -> str:
    """``/v1/legal`` or ``/v2/legal`` (transaction start, stop and state)."""
    return f"/{api_version}/legal"


def ocmf(api_version: str) -> str:
    """``/v1/ocmf`` or ``/v2/ocmf`` (signed transaction records)."""
    return f"/{api_version}/ocmf"
