"""A simulated year of sessions through the real controller, cut by crashes at random.

The real ``MeterController``, ``RecordBook`` and ``TransactionJournal`` (on disk, with the
module's default retention) drive the real ``SimulatedMeter`` through the real meter
client, all on one ``ManualClock``: 10 000 sessions of 10 to 50 minutes spread over 365
simulated days take minutes, not a year.

**How a crash is made, and why it stands for SIGKILL.** What a killed module leaves behind
is its journal on disk and what the meter did; memory is gone. Both change only at two
kinds of effects: a journal write (an atomic replace, fsynced) and a meter request. A
crash point sits before and after each of them: "before" leaves the write unwritten or
the request unsent, "after a meter request" means the meter carried it out but its answer
never arrived. A crash raises ``SimulatedCrash`` (a ``BaseException``, so no ``except
Exception`` in the module can absorb it) at the chosen point; the controller, its journal
object and its clients are dropped, and a new one starts from the directory and the same
meter, as a restarted process would. Every instant a SIGKILL can hit falls between two
such effects, so it leaves one of these states; a write cut inside ``write_atomic``
leaves only a temporary file, which the journal removes at start-up (covered by the
process-level kill tests in ``tests/integration/test_journal_crash.py``). 1 000 crash
points are drawn at random over all effects of the run.

**EvseManager** asks for each session's record exactly once, and once more after its own
restart. A module that dies takes EVerest down with it (the manager stops every module
when one exits, and the service restarts the whole stack), so a stop whose answer was
lost in a crash is asked once more after the restart; a start whose answer was lost is
not (for EvseManager it failed), and a session the crash cut while charging goes on and
is stopped as usual. Records of transactions nobody asks for reach the bill by the late
road (published by the restarted module). For each transaction the meter ran, the
records handed out (stop answers and late publications) are compared with the meter's
own: none missing (lost), none twice (duplicate), none differing (foreign).
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The simulated meter behind the client is the tests' own DeviceTransport.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lem_dcbm.journal as journal_module  # noqa: E402
from lem_dcbm.clock import ManualClock  # noqa: E402
from lem_dcbm.config import ModuleConfig  # noqa: E402
from lem_dcbm.core.controller import MeterController  # noqa: E402
from lem_dcbm.core.record_book import RecordBook  # noqa: E402
from lem_dcbm.core.timesync import TimeSync  # noqa: E402
from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.journal import TransactionJournal  # noqa: E402
from lem_dcbm.meter.client import MeterClient  # noqa: E402
from lem_dcbm.records.late_record import KeptRecord  # noqa: E402
from lem_dcbm.runtime_config import clock_settings, controller_settings  # noqa: E402
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter  # noqa: E402
from lem_dcbm.simulator.ocmf_signer import OcmfSigner  # noqa: E402
from tests.support.device_transport import DeviceTransport  # noqa: E402

YEAR_S = 365 * 86_400.0
START = datetime(2027, 1, 1, 0, 0, tzinfo=timezone.utc)
MODULE_ID = "endurance"


class SimulatedCrash(BaseException):
    """The module process dies here."""


class CrashPlan:
    """Counts effects and crashes at ``crashes`` of them, spread at random over the run.

    ``crashes`` distinct sessions are drawn; in each, the crash comes at a random effect
    within the average session's count. One that a short session does not reach happens
    in the next session (or in the background work after the last).
    """

    def __init__(self, rng: random.Random, crashes: int, sessions: int) -> None:
        self._rng = rng
        self._chosen = set(rng.sample(range(sessions), min(crashes, sessions)))
        self.effects = 0
        self.done: Counter[str] = Counter()
        self.session = 0
        self._queued = 0
        self._next: int | None = None
        self._per_session = 40.0

    def begin_session(self, number: int) -> None:
        """Session ``number`` begins; arm a crash in it if it is a chosen one."""
        self.session = number
        if number:
            self._per_session = self.effects / number
        if number in self._chosen:
            self._queued += 1
            self._arm()

    def _arm(self) -> None:
        if self._next is None and self._queued:
            self._queued -= 1
            self._next = self.effects + self._rng.randint(1, max(1, round(self._per_session)))

    def stop(self) -> None:
        """No more crashes."""
        self._queued = 0
        self._next = None

    @property
    def pending(self) -> bool:
        """A crash is armed or queued."""
        return self._next is not None or self._queued > 0

    def point(self, where: str) -> None:
        """One crash point; raises ``SimulatedCrash`` when it is a chosen one."""
        self.effects += 1
        if self._next is None or self.effects < self._next:
            return
        self.done[where] += 1
        self._next = None
        self._arm()
        raise SimulatedCrash(where)


class CrashingTransport:
    """The simulated meter behind the real client, with crash points around each request."""

    def __init__(self, device: SimulatedMeter, plan: CrashPlan) -> None:
        self.device = device
        self.plan = plan
        self.requests = 0
        self._meter = DeviceTransport(device)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        """Answer as the meter would, unless the module dies before or after."""
        self.plan.point("before a meter request")
        answer = self._meter.request(
            method, path, json_body=json_body, params=params, timeout_s=timeout_s
        )
        self.requests += 1
        self.plan.point("after a meter request, answer lost")
        return answer

    def close(self) -> None:
        """Nothing to close."""


@dataclass
class Deliveries:
    """Every record handed out, per transaction: by stop answer or late publication."""

    by_id: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    def publish(self, record: KeptRecord) -> bool:
        # A record also answered to EvseManager's start-up recovery stop goes late marked
        # ``answered``: a backend drops that copy by meter id and record number.
        road = "late, answered" if record.answered else "late"
        self.by_id[record.transaction_id].append((road, record.ocmf))
        return True

    def where(self, transaction_id: str) -> str:
        return f"records/{transaction_id}"


@dataclass
class Alerts:
    """Vendor warnings raised and cleared (counted only)."""

    raised: Counter[str] = field(default_factory=Counter)

    def warn(self, sub_type: str, message: str) -> None:
        self.raised[sub_type] += 1

    def clear(self, sub_type: str) -> None:
        pass


class Year:
    """The meter, the journal directory and the module restarted after each crash."""

    def __init__(self, base: Path, sessions: int, crashes: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = ManualClock(START)
        self.began = self.clock.monotonic()
        self.device = SimulatedMeter(
            self.clock, OcmfSigner.generate(), MeterConfig(api="v2", min_transaction_seconds=120)
        )
        self.plan = CrashPlan(self.rng, crashes, sessions)
        self.transport = CrashingTransport(self.device, self.plan)
        self.config = ModuleConfig(ip_address="127.0.0.1")
        self.base = base
        self.directory = base / MODULE_ID
        self.deliveries = Deliveries()
        self.alerts = Alerts()
        self.restarts = 0
        self.start_refused: Counter[str] = Counter()
        self.stop_failed = 0
        self.asked_again = 0
        self.controller = self._start_module()

    def open_module(self, transport: Any) -> MeterController:
        """A module's controller over ``transport`` with its journal, initialised."""
        client = MeterClient(transport)
        clock_values = clock_settings(self.config)
        controller = MeterController(
            client,
            controller_settings(self.config),
            self.clock,
            TimeSync(
                client,
                self.clock,
                timezone=clock_values.timezone,
                dst=clock_values.dst,
                ntp_servers=clock_values.ntp_servers,
            ),
            records=RecordBook(
                TransactionJournal(
                    self.directory,
                    keep=self.config.journal_max_transactions,
                    max_age_days=self.config.journal_max_age_days,
                    clock=self.clock,
                ),
                alerts=self.alerts,
            ),
            alerts=self.alerts,
            late_records=self.deliveries,
        )
        controller.initialize()
        return controller

    def _start_module(self) -> MeterController:
        while True:
            try:
                return self.open_module(self.transport)
            except SimulatedCrash:
                self.restarts += 1

    def crashed(self) -> None:
        """The process died: a new one starts on the same journal and meter."""
        self.restarts += 1
        self.controller = self._start_module()

    def housekeeping(self) -> None:
        try:
            self.controller.housekeeping()
        except SimulatedCrash:
            self.crashed()

    def session(self, number: int, period_s: float) -> None:
        """One session: start, charge, stop; EvseManager asks each once."""
        self.plan.begin_session(number)
        transaction_id = f"y{number:05d}"
        charge_s = self.rng.uniform(600, 3000)
        idle_s = max(60.0, self.rng.uniform(0, 2 * period_s) - charge_s)
        self.clock.advance(idle_s / 2)
        self.housekeeping()
        self.clock.advance(idle_s / 2)
        request = {
            "evse_id": "DE*LEM*E0001",
            "transaction_id": transaction_id,
            "identification_status": "ASSIGNED",
            "identification_type": "ISO14443",
            "identification_flags": ["RFID_PLAIN"],
            "identification_data": f"card-{number % 97}",
        }
        try:
            started = self.controller.start_transaction(transaction_request(request))
        except SimulatedCrash:
            self.crashed()
            return
        if not started.ok:
            reason = re.sub(r"y\d{5}", "<id>", started.error or "")
            self.start_refused[re.sub(r"\d+", "<n>", reason)[:300]] += 1
            return
        self.device.set_load(power_kw=self.rng.uniform(20, 150))
        self.clock.advance(charge_s / 2)
        self.housekeeping()
        self.clock.advance(charge_s / 2)
        self.device.set_load(power_kw=0.0)
        try:
            stopped = self.controller.stop_transaction(transaction_id)
        except SimulatedCrash:
            self.crashed()
            self.asked_again += 1
            try:
                stopped = self.controller.stop_transaction(transaction_id)
            except SimulatedCrash:
                self.crashed()
                return
        if stopped.ok and stopped.record is not None:
            self.deliveries.by_id[transaction_id].append(("stop", stopped.record.ocmf))
        else:
            self.stop_failed += 1

    def settle(self) -> None:
        """After the last session: let the background fetch what is still pending."""
        for _ in range(2):
            for _ in range(400):
                self.clock.advance(300)
                self.housekeeping()
                if not self.plan.pending and not self.controller.pending_records:
                    break
            if self.plan.pending:
                # Killed while idle, with nothing left to do.
                self.plan.done["while idle"] += 1
                self.plan.stop()
                self.crashed()


def audit(year: Year) -> dict[str, Any]:
    """Lost, duplicate and foreign records against what the meter ran."""
    at_meter = {t["transactionId"]: t for t in year.device.state()["transactions"]}
    lost = [tid for tid, t in at_meter.items() if not year.deliveries.by_id.get(tid)]
    # The marked copy of an answered record is not a second bill (see Deliveries.publish).
    duplicate = {
        tid: n
        for tid, d in year.deliveries.by_id.items()
        if (n := sum(1 for road, _ in d if road != "late, answered")) > 1
    }
    foreign = [
        tid
        for tid, delivered in year.deliveries.by_id.items()
        if tid not in at_meter or any(ocmf != at_meter[tid]["ocmf"] for _, ocmf in delivered)
    ]
    roads = Counter(road for d in year.deliveries.by_id.values() for road, _ in d)
    billed = sum(1 for tid in at_meter if year.deliveries.by_id.get(tid) and tid not in foreign)
    return {
        "transactions_at_meter": len(at_meter),
        "records_billed": billed,
        "by_stop_answer": roads["stop"],
        "by_late_road": roads["late"],
        "marked_copies_of_answers": roads["late, answered"],
        "lost": len(lost),
        "lost_ids": lost[:20],
        "duplicate": sum(n - 1 for n in duplicate.values()),
        "duplicate_ids": sorted(duplicate)[:20],
        "duplicate_roads": {
            tid: [road for road, _ in year.deliveries.by_id[tid]] for tid in sorted(duplicate)[:20]
        },
        "foreign": len(foreign),
        "foreign_ids": foreign[:20],
    }


def directory_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def startup_seconds(year: Year, copies: int = 3) -> float:
    """The best of ``copies`` module start-ups (journal load, reconcile, init) on the journal."""
    plain = CrashingTransport(year.device, CrashPlan(random.Random(0), 0, 1))
    best = float("inf")
    for _ in range(copies):
        began = time.perf_counter()
        year.open_module(plain)
        best = min(best, time.perf_counter() - began)
    return best


def records_list_seconds(base: Path) -> float:
    """Wall time of ``lem-dcbm records list`` on the journal (a new interpreter each)."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lem_dcbm", "records", "list"]
        + ["--module-id", MODULE_ID, "--journal-dir", str(base)],
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"records list failed: {done.stderr.decode()[-500:]}")
    return elapsed


def grow_journal(source: Path, target: Path, entries: int) -> None:
    """A journal of ``entries`` finished transactions, copies of the kept ones renamed."""
    from lem_dcbm.journal import decode_entry, encode_entry, entry_file_name

    target.mkdir(parents=True, exist_ok=True)
    templates = [decode_entry(p.read_bytes()) for p in sorted(source.glob("tx-*.json"))]
    templates = [t for t in templates if t.ocmf is not None]
    for n in range(entries):
        entry = templates[n % len(templates)]
        copy = type(entry)(
            transaction_id=f"g{n:06d}",
            sequence=n + 1,
            steps=entry.steps,
            ocmf=entry.ocmf,
            updated_at=entry.updated_at,
            data=entry.data,
        )
        (target / entry_file_name(copy.transaction_id)).write_bytes(encode_entry(copy))


def run_year(
    work: Path, *, sessions: int, crashes: int, seed: int, big_journal: int
) -> dict[str, Any]:
    """The whole run; its figures."""
    journal_module_write = journal_module.write_atomic
    base = work / "journal"
    year_holder: list[Year] = []

    def crashing_write(path: Path, data: bytes) -> None:
        plan = year_holder[0].plan if year_holder else None
        if plan is not None:
            plan.point("before a journal write")
        journal_module_write(path, data)
        if plan is not None:
            plan.point("after a journal write")

    journal_module.write_atomic = crashing_write  # type: ignore[assignment]
    try:
        began = time.perf_counter()
        year = Year(base, sessions, crashes, seed)
        year_holder.append(year)
        period_s = YEAR_S / sessions
        for number in range(sessions):
            year.session(number, period_s)
        year.settle()
        run_s = time.perf_counter() - began
    finally:
        journal_module.write_atomic = journal_module_write  # type: ignore[assignment]
    figures = audit(year)
    figures["pending_at_end"] = sorted(year.controller.pending_records)
    figures["meter_requests"] = year.transport.requests
    figures["logbook_events"] = year.device.logbook()["count"]
    files, size = directory_size(year.directory)
    big = work / "big"
    grow_journal(year.directory, big / MODULE_ID, big_journal)
    big_files, big_size = directory_size(big / MODULE_ID)
    startup = startup_seconds(year)
    listing = records_list_seconds(base)
    year.directory = big / MODULE_ID
    big_startup = startup_seconds(year, copies=1)
    big_listing = records_list_seconds(big)
    figures.update(
        {
            "sessions": sessions,
            "simulated_days": (year.clock.monotonic() - year.began) / 86_400.0,
            "crashes": sum(year.plan.done.values()),
            "crash_points": dict(year.plan.done),
            "effects": year.plan.effects,
            "restarts": year.restarts,
            "start_refused": sum(year.start_refused.values()),
            "start_refusals": dict(year.start_refused.most_common(5)),
            "stop_without_record": year.stop_failed,
            "stops_asked_again": year.asked_again,
            "alerts": dict(year.alerts.raised),
            "journal_files": files,
            "journal_bytes": size,
            "startup_s": startup,
            "records_list_s": listing,
            "big_journal_files": big_files,
            "big_journal_bytes": big_size,
            "big_startup_s": big_startup,
            "big_records_list_s": big_listing,
            "run_s": run_s,
        }
    )
    shutil.rmtree(big, ignore_errors=True)
    return figures
