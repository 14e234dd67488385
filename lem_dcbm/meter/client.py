"""One method per meter endpoint, each answer checked and parsed once into a model.

Every failure is a ``MeterError`` naming method and endpoint: ``MeterStatusError`` for
an unexpected HTTP status (with a body excerpt), ``MeterBodyError`` for a body that is
not JSON or lacks a field, and whatever the transport raises for the connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import quote

from lem_dcbm.errors import ConfigError, MeterBodyError, MeterStatusError
from lem_dcbm.json_types import JsonObject
from lem_dcbm.meter import endpoints
from lem_dcbm.meter.models import (
    LegalState,
    LiveMeasure,
    MeterStatus,
    SettingsResult,
    ShapeError,
    StopReport,
    parse_legal,
    parse_livemeasure,
    parse_settings_result,
    parse_status,
    parse_stop_report,
)
from lem_dcbm.meter.tls import normalize_pem
from lem_dcbm.meter.transport import HttpTransport, Transport

T = TypeVar("T")

OCMF_PREFIX = "OCMF|"


def _unwrap_ocmf(text: str) -> str | None:
    """The OCMF record in ``text``, or None when there is none beyond doubt.

    The record is the customer's bill and is returned exactly as the meter sent it.
    Two wrappers are removed because they are provably not part of it: a JSON string
    literal (``"OCMF|..."``; decoding it restores the exact characters) and a JSON
    object holding exactly one string value that is a record.
    """
    if text.startswith(OCMF_PREFIX):
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, str) and data.startswith(OCMF_PREFIX):
        return data
    if isinstance(data, Mapping):
        records = [v for v in data.values() if isinstance(v, str) and v.startswith(OCMF_PREFIX)]
        if len(records) == 1:
            return records[0]
    return None


class MeterClient:
    """The meter's REST API; ``api_version`` picks ``/v1`` or ``/v2`` where both exist."""

    def __init__(self, transport: Transport, api_version: str = "v1") -> None:
        self._transport = transport
        #: ``scheme://host:port`` for error messages; transports without an address give "".
        self.base_url: str = str(getattr(transport, "base_url", ""))
        self._api_version = ""
        self.api_version = api_version
        #: The request timeout when it was changed after connecting; None: the transport's.
        self._timeout_s: float | None = None

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        tls_certificate_pem: str = "",
        timeout_s: float = 5.0,
        api_version: str = "v1",
        interface: str = "",
        certificate_source: str = "meter_tls_certificate",
    ) -> MeterClient:
        """Build a client for ``host:port``: HTTPS pinned to the PEM if one is given.

        An unparsable PEM raises ``ConfigError`` here, before any request.
        ``certificate_source`` says where a user gives the certificate (the config key, a
        command-line option), for the hint when the meter turns out to speak HTTPS.
        """
        scheme = "https" if tls_certificate_pem else "http"
        netloc = f"[{host}]" if ":" in host and not host.startswith("[") else host
        transport = HttpTransport(
            f"{scheme}://{netloc}:{port}",
            timeout_s=timeout_s,
            tls_certificate_pem=tls_certificate_pem,
            interface=interface,
            certificate_source=certificate_source,
        )
        return cls(transport, api_version=api_version)

    @property
    def api_version(self) -> str:
        """``"v1"`` or ``"v2"``: the path generation for livemeasure, legal and ocmf."""
        return self._api_version

    @api_version.setter
    def api_version(self, value: str) -> None:
        if value not in endpoints.API_VERSIONS:
            raise ValueError(f"api_version must be one of {endpoints.API_VERSIONS}, got {value!r}")
        self._api_version = value

    def set_timeout(self, timeout_s: float) -> None:
        """Give every later request ``timeout_s`` (the command timeout changed at run time)."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._timeout_s = timeout_s

    # -- plumbing ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        expected: int,
        json_body: object = None,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        if timeout_s is None:
            timeout_s = self._timeout_s
        status, text = self._transport.request(
            method, path, json_body=json_body, timeout_s=timeout_s
        )
        if status != expected:
            raise MeterStatusError(method, path, status, text, base_url=self.base_url)
        return status, text

    def _get_json(
        self,
        method: str,
        path: str,
        expected: int,
        json_body: object = None,
        timeout_s: float | None = None,
    ) -> tuple[int, str, object]:
        status, text = self._call(method, path, expected, json_body, timeout_s)
        try:
            return status, text, json.loads(text)
        except ValueError as exc:
            raise MeterBodyError(
                method, path, f"not JSON ({exc})", text, status, base_url=self.base_url
            ) from exc

    def _parse(
        self,
        method: str,
        path: str,
        expected: int,
        parser: Callable[[object], T],
        json_body: object = None,
        timeout_s: float | None = None,
    ) -> T:
        status, text, data = self._get_json(method, path, expected, json_body, timeout_s)
        try:
            return parser(data)
        except (ShapeError, TypeError) as exc:
            raise MeterBodyError(
                method, path, str(exc), text, status, base_url=self.base_url
            ) from exc

    # -- endpoints --------------------------------------------------------------------

    def status(self) -> MeterStatus:
        """``GET /v1/status``: status bits, meter id, OCMF key, firmware."""
        return self._parse("GET", endpoints.STATUS, endpoints.OK, parse_status)

    def livemeasure(self, timeout_s: float | None = None) -> LiveMeasure:
        """``GET /v1|v2/livemeasure``: voltage, current, power, energy registers.

        ``timeout_s`` overrides the command timeout: a 1 Hz reader must give up sooner.
        """
        path = endpoints.livemeasure(self._api_version)
        return self._parse("GET", path, endpoints.OK, parse_livemeasure, timeout_s=timeout_s)

    def supports_v2(self) -> bool:
        """Ask the meter whether it offers ``/v2`` (200 yes, 404 no)."""
        path = endpoints.livemeasure("v2")
        status, text = self._transport.request("GET", path, timeout_s=self._timeout_s)
        if status == endpoints.OK:
            return True
        if status == endpoints.NOT_FOUND:
            return False
        raise MeterStatusError("GET", path, status, text, base_url=self.base_url)

    def legal(self) -> LegalState:
        """``GET /v1|v2/legal``: the current or last transaction."""
        path = endpoints.legal(self._api_version)
        return self._parse("GET", path, endpoints.OK, parse_legal)

    def start_transaction(self, body: Mapping[str, object]) -> LegalState:
        """``POST /v1|v2/legal``: start a transaction; the meter must answer 201, running."""
        path = endpoints.legal(self._api_version)
        state = self._parse("POST", path, endpoints.CREATED, parse_legal, json_body=dict(body))
        if not state.running:
            raise MeterBodyError(
                "POST",
                path,
                "the meter reports the new transaction as not running",
                json.dumps(dict(state.raw)),
                endpoints.CREATED,
                base_url=self.base_url,
            )
        return state

    def stop_transaction(self, transaction_id: str) -> StopReport:
        """``PUT /v1|v2/legal?transactionId=ID`` with ``{"running": false}``: the stop report."""
        path = (
            f"{endpoints.legal(self._api_version)}?transactionId={quote(transaction_id, safe='')}"
        )
        return self._parse(
            "PUT", path, endpoints.OK, parse_stop_report, json_body={"running": False}
        )

    def ocmf(self, transaction_id: str | None = None) -> str:
        """``GET /v1|v2/ocmf[?transactionId=ID]``: the signed record, exactly as sent."""
        path = endpoints.ocmf(self._api_version)
        if transaction_id is not None:
            path += f"?transactionId={quote(transaction_id, safe='')}"
        return self._ocmf_at(path)

    def ocmf_by_index(self, index: int) -> str:
        """``GET /v1|v2/ocmf/{index}``; a negative index counts back from the latest."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        return self._ocmf_at(f"{endpoints.ocmf(self._api_version)}/{index}")

    def _ocmf_at(self, path: str) -> str:
        status, text = self._call("GET", path, endpoints.OK)
        record = _unwrap_ocmf(text)
        if record is None:
            raise MeterBodyError(
                "GET",
                path,
                f"not an OCMF record ('{OCMF_PREFIX}...')",
                text,
                status,
                base_url=self.base_url,
            )
        return record

    def settings(self) -> JsonObject:
        """``GET /v1/settings``: the settings object as the meter sends it."""
        return self._get_object(endpoints.SETTINGS)

    def logbook(self) -> JsonObject:
        """``GET /v1/logbook``: the meter's event log, as sent (its shape is not documented)."""
        return self._get_object(endpoints.LOGBOOK)

    def _get_object(self, path: str) -> JsonObject:
        status, text, data = self._get_json("GET", path, endpoints.OK)
        if not isinstance(data, dict):
            raise MeterBodyError(
                "GET", path, "expected a JSON object", text, status, base_url=self.base_url
            )
        return data

    def put_settings(self, patch: Mapping[str, object]) -> SettingsResult:
        """``PUT /v1/settings`` with a partial object; ``accepted`` is the meter's verdict."""
        return self._parse(
            "PUT", endpoints.SETTINGS, endpoints.OK, parse_settings_result, json_body=dict(patch)
        )

    def certificate(self) -> str:
        """``GET /v1/certificate``: the meter's TLS certificate as canonical PEM."""
        status, text = self._call("GET", endpoints.CERTIFICATE, endpoints.OK)
        try:
            data = json.loads(text)
        except ValueError:
            data = text  # some firmware may send the bare PEM
        pem = data.get("certificate") if isinstance(data, Mapping) else data
        if not isinstance(pem, str):
            raise MeterBodyError(
                "GET",
                endpoints.CERTIFICATE,
                "field 'certificate' is missing",
                text,
                status,
                base_url=self.base_url,
            )
        try:
            return normalize_pem(pem)
        except ConfigError as exc:
            raise MeterBodyError(
                "GET", endpoints.CERTIFICATE, exc.problem, text, status, base_url=self.base_url
            ) from exc

    def close(self) -> None:
        """Close the transport's connections."""
        self._transport.close()
