"""An in-memory meter behind the ``MeterApi`` seam, for unit tests of the core."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lem_dcbm.errors import MeterConnectionError, MeterStatusError
from lem_dcbm.meter.models import (
    LegalState,
    LiveMeasure,
    MeterStatus,
    SettingsResult,
    StopReport,
)
from lem_dcbm.simulator.ocmf_signer import (
    CableCompensation,
    OcmfContent,
    OcmfReading,
    OcmfSigner,
    build_payload,
    tamper_record,
)

_SIGNER = OcmfSigner.generate()
PUBLIC_KEY = _SIGNER.public_key_ocmf


def sign(payload: str) -> str:
    """An OCMF record of ``payload`` signed with the fake meter's key."""
    return _SIGNER.record(payload)


def ocmf_record(
    transaction_id: str,
    *,
    ended: bool,
    meter_id: str = "12024072805",
    body: Mapping[str, Any] | None = None,
    pagination: int = 1,
) -> str:
    """A signed record shaped like the meter's, with begin and (once stopped) end readings."""
    sent = body or {"clientId": f",{transaction_id}", "evseId": "", "cableId": 0}
    begin = OcmfReading("2026-11-22T11:00:00,000+0100 S", 1.0, 0.0)
    content = OcmfContent(
        meter_id=meter_id,
        firmware="MU-2.3.0.1_SU-0.1.3.0",
        pagination=pagination,
        identification_type=0,
        identification=str(sent.get("clientId", "")),
        tariff_text=str(sent.get("TT", "")),
        evse_id=str(sent.get("evseId", "")),
        cable=CableCompensation("No_Comp", int(sent.get("cableId", 0)), 0),
        begin=begin,
        end=OcmfReading("2026-11-22T11:05:00,000+0100 S", 2.0, 0.0) if ended else None,
    )
    return sign(build_payload(content))


@dataclass
class FakeMeter:
    """Keeps a transaction, settings and a call log; ``fail`` injects errors per call."""

    api_version: str = "v1"
    meter_id: str = "12024072805"
    firmware: str = "MU-2.3.0.1"
    v2: bool = False
    time_sync_ok: bool = True
    sensor_link_ok: bool = True
    running_id: str | None = None
    last_id: str = ""
    ended: set[str] = field(default_factory=set)
    settings_store: dict[str, Any] = field(default_factory=lambda: {"ocmfId": {"IT": 0}})
    settings_writes: list[dict[str, Any]] = field(default_factory=list)
    refuse_settings: set[str] = field(default_factory=set)
    stop_status: int = 17
    tamper: bool = False
    #: serve only the begin reading, as a meter that has not finished the record yet
    begin_only: bool = False
    #: answer GET /legal with 405, as EVerest's FastAPI mock does
    no_get_legal: bool = False
    calls: list[str] = field(default_factory=list)
    #: the start body of each transaction, as the meter received it
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the final record of each stopped transaction, as stored
    stored: dict[str, str] = field(default_factory=dict)
    livemeasure_timeouts: list[float | None] = field(default_factory=list)
    #: call name -> list of exceptions (or callables) consumed one per call
    fail: dict[str, list[BaseException | Callable[[], None]]] = field(default_factory=dict)

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        queue = self.fail.get(name)
        if queue:
            item = queue.pop(0)
            if isinstance(item, BaseException):
                raise item
            item()

    def status(self) -> MeterStatus:
        self._enter("status")
        bits = {
            "suLinkStatusIsOk": self.sensor_link_ok,
            "muFatalErrorOccured": False,
            "transactionIsOnGoing": self.running_id is not None,
            "timeSyncStatusIsOk": self.time_sync_ok,
        }
        value = sum(1 << i for i, on in enumerate(bits.values()) if on)
        return MeterStatus(
            value=value,
            bits=bits,
            error_value=0,
            error_bits={},
            meter_id=self.meter_id,
            public_key_ocmf=PUBLIC_KEY,
            public_key="",
            firmware_version=self.firmware,
            time="",
        )

    def livemeasure(self, timeout_s: float | None = None) -> LiveMeasure:
        self.livemeasure_timeouts.append(timeout_s)
        self._enter("livemeasure")
        return LiveMeasure(400.0, 10.0, 4.0, 30.0, 28.0, 12.5, 0.25, "2026-11-22T10:00:00+01:00")

    def supports_v2(self) -> bool:
        self._enter("supports_v2")
        return self.v2

    def legal(self) -> LegalState:
        self._enter("legal")
        if self.no_get_legal:
            raise MeterStatusError("GET", "/v1/legal", 405, '{"detail":"Method Not Allowed"}')
        tid = self.running_id or self.last_id
        # The meter echoes what the transaction was started with (as the simulator does).
        sent = self.bodies.get(tid) or {"evseId": "", "clientId": f",{tid}"}
        raw = {
            "transactionId": tid,
            "evseId": sent.get("evseId", ""),
            "clientId": sent.get("clientId", ""),
            "running": self.running_id is not None,
        }
        return LegalState(transaction_id=tid, running=self.running_id is not None, raw=raw)

    def start_transaction(self, body: Mapping[str, Any]) -> LegalState:
        self._enter("start_transaction")
        if self.running_id is not None:
            raise MeterStatusError("POST", "/v1/legal", 409, '{"error": "transaction running"}')
        if not self.sensor_link_ok:
            raise MeterStatusError("POST", "/v1/legal", 400, '{"error": "sensor link down"}')
        self.running_id = str(body["transactionId"])
        self.last_id = self.running_id
        self.last_start_body = dict(body)
        self.bodies[self.running_id] = dict(body)
        return LegalState(transaction_id=self.running_id, running=True)

    def stop_transaction(self, transaction_id: str) -> StopReport:
        self._enter("stop_transaction")
        if self.running_id != transaction_id:
            raise MeterStatusError("PUT", "/v1/legal", 409, '{"error": "no such transaction"}')
        self.running_id = None
        self.ended.add(transaction_id)
        return StopReport(transaction_id=transaction_id, transaction_status=self.stop_status)

    def ocmf_by_index(self, index: int) -> str:
        self._enter("ocmf_by_index")
        raise MeterStatusError("GET", f"/v1/ocmf/{index}", 404, "not found")

    def ocmf(self, transaction_id: str | None = None) -> str:
        self._enter("ocmf")
        tid = transaction_id or self.last_id
        body = self.bodies.get(tid)
        if self.begin_only:
            return ocmf_record(tid, ended=False, meter_id=self.meter_id, body=body)
        if tid != self.running_id and tid not in self.ended:
            raise MeterStatusError("GET", "/v1/ocmf", 404, "not found")
        if tid in self.ended:
            # A stopped transaction's record is stored once and served as stored.
            record = self.stored.setdefault(
                tid, ocmf_record(tid, ended=True, meter_id=self.meter_id, body=body)
            )
        else:
            record = ocmf_record(tid, ended=False, meter_id=self.meter_id, body=body)
        return tamper_record(record) if self.tamper else record

    def settings(self) -> dict[str, Any]:
        self._enter("settings")
        return self.settings_store

    def put_settings(self, patch: Mapping[str, Any]) -> SettingsResult:
        self._enter("put_settings")
        self.settings_writes.append(dict(patch))
        key = next(iter(patch))
        sub = patch[key]
        name = f"{key}.{next(iter(sub))}" if isinstance(sub, Mapping) else key
        if self.running_id is not None or name in self.refuse_settings:
            return SettingsResult(accepted=False, meter_id=self.meter_id)
        self.settings_store.update(patch)
        return SettingsResult(accepted=True, meter_id=self.meter_id)


def unreachable(name: str) -> MeterConnectionError:
    """The error a dead meter gives."""
    return MeterConnectionError("GET", f"/v1/{name}", "connection refused")
