"""A controller, its journal and the simulated meter behind a faulty transport, on one clock.

The simulated meter runs in process behind the real client; ``FaultyTransport`` loses
answers the way embedded devices do; the late-record road and the alerts are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lem_dcbm.clock import ManualClock
from lem_dcbm.core.controller import ControllerSettings, MeterController
from lem_dcbm.core.record_book import RecordBook
from lem_dcbm.core.timesync import NtpServer, TimeSync
from lem_dcbm.core.transaction_request import StartSettings
from lem_dcbm.journal import TransactionJournal
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.records.late_record import KeptRecord
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner
from tests.support.device_transport import DeviceTransport
from tests.support.faulty_transport import FaultyTransport

START = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
SIGNER = OcmfSigner.generate()
WAIT_S = 10.0


def request(transaction_id: str, evse_id: str = "DE*LEM*E1") -> dict[str, Any]:
    return {
        "evse_id": evse_id,
        "transaction_id": transaction_id,
        "identification_status": "ASSIGNED",
        "identification_type": "ISO14443",
        "identification_flags": [],
        "identification_data": "card-7",
    }


@dataclass
class LateRoad:
    published: list[KeptRecord] = field(default_factory=list)

    def publish(self, record: KeptRecord) -> bool:
        self.published.append(record)
        return True

    def where(self, transaction_id: str) -> str:
        return f"records/{transaction_id}"


@dataclass
class Alerts:
    active: dict[str, str] = field(default_factory=dict)

    def warn(self, sub_type: str, message: str) -> None:
        self.active[sub_type] = message

    def clear(self, sub_type: str) -> None:
        self.active.pop(sub_type, None)


def build_controller(
    client: MeterClient,
    clock: ManualClock,
    journal_dir: Path,
    alerts: Alerts,
    late: LateRoad,
    *,
    ntp_servers: tuple[NtpServer, ...] = (),
    **settings: Any,
) -> MeterController:
    """An initialised controller with its journal in ``journal_dir``, as a module has it."""
    controller = MeterController(
        client,
        ControllerSettings(
            start=StartSettings(tariff_id=0, cable_id=1),
            stop_record_wait_s=WAIT_S,
            transaction_retries=2,
            **settings,
        ),
        clock,
        TimeSync(
            client, clock, timezone="+01:00", dst={"activated": False}, ntp_servers=ntp_servers
        ),
        records=RecordBook(TransactionJournal(journal_dir, clock=clock)),
        alerts=alerts,
        late_records=late,
    )
    controller.initialize()
    return controller


class Rig:
    """Simulated meter, faulty transport, journal and controller on one manual clock."""

    def __init__(self, tmp_path: Path, *, api: str = "v1") -> None:
        self.clock = ManualClock(START)
        self.device = SimulatedMeter(
            self.clock, SIGNER, MeterConfig(min_transaction_seconds=0, api=api)
        )
        self.transport = FaultyTransport(DeviceTransport(self.device), self.clock)
        self.journal_dir = tmp_path / "journal"
        self.late = LateRoad()
        self.alerts = Alerts()
        self.controller = self.restart()

    def restart(self, **settings: Any) -> MeterController:
        """A new module process: new controller, same meter, same journal."""
        self.controller = build_controller(
            MeterClient(self.transport),
            self.clock,
            self.journal_dir,
            self.alerts,
            self.late,
            **settings,
        )
        return self.controller

    def transactions(self) -> list[dict[str, Any]]:
        return list(self.device.state()["transactions"])

    def ids_at_meter(self) -> list[str]:
        return [t["transactionId"] for t in self.transactions()]

    def record_at_meter(self, transaction_id: str) -> str:
        matching = [t for t in self.transactions() if t["transactionId"] == transaction_id]
        return str(matching[-1]["ocmf"])

    def charge(self, seconds: float = 60.0) -> None:
        self.device.set_load(power_kw=50.0)
        self.clock.advance(seconds)
