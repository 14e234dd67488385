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

**A late publication the crash cut before the journal noted it.** The module publishes a
late record, then notes ``late_published_at`` in the journal; a crash between the two
leaves the record kept and unnoted, and the restarted module publishes it again (it must:
the real module's publication was queued in the MQTT client when the process died, and a
SIGKILL empties that queue, so the first copy may never have left). Such a first copy is
counted apart, as neither a bill nor a duplicate: a record whose only copy is one is lost,
and the republication bills it. If the first copy did leave before the kill, the second is
the at-least-once repeat of QoS 1 that a backend drops by meter id and record number
(docs/records.md, "Exactly once").

The run is deterministic: one seed and one version of the code give the same run, crash
for crash (the module's retry jitter, the only randomness it draws, is 0 in every policy
this run uses, and no decision depends on wall time or set order). ``crash_log`` in the
result names each crash (session, effect number, point, the module's frames), so a
duplicate's crash can be replayed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
from lem_dcbm.everest.shapes import transaction_request  # noqa: E402
from lem_dcbm.journal import (  # noqa: E402
    TransactionJournal,
    decode_entry,
    encode_entry,
    entry_file_name,
)
from lem_dcbm.meter.client import MeterClient  # noqa: E402
from lem_dcbm.records.late_record import KeptRecord  # noqa: E402
from lem_dcbm.runtime_config import clock_settings, controller_settings  # noqa: E402
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter  # noqa: E402
from lem_dcbm.simulator.ocmf_signer import OcmfSigner  # noqa: E402
from tests.support.device_transport import DeviceTransport  # noqa: E402

YEAR_S = 365 * 86_400.0
START = datetime(2027, 1, 1, 0, 0, tzinfo=timezone.utc)
MODULE_ID = "endurance"


#: A late publication the crash cut before the journal noted it (see the module docstring).
CUT_LATE = "late, cut by a crash before the journal noted it"
#: A copy of the record answered to EvseManager's start-up recovery stop, marked ``answered``.
MARKED_LATE = "late, answered"
#: Copies that are not a bill of their own.
NOT_A_BILL = (MARKED_LATE, CUT_LATE)


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
        #: Each crash: session, effect number, point and the module's innermost frames.
        self.log: list[dict[str, Any]] = []
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
        self.log.append(
            {"session": self.session, "effect": self.effects, "where": where, "in": _frames()}
        )
        self._next = None
        self._arm()
        raise SimulatedCrash(where)


def _frames() -> str:
    """The module's frames at a crash point, innermost first, for replaying it."""
    frames = [
        f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_stack()
        if f"{os.sep}lem_dcbm{os.sep}" in frame.filename
    ]
    return " < ".join(reversed(frames[-6:]))


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
    #: The transaction of the last unmarked late publication, until a crash looks at it.
    last_late: str | None = None

    def publish(self, record: KeptRecord) -> bool:
        # A record also answered to EvseManager's start-up recovery stop goes late marked
        # ``answered``: a backend drops that copy by meter id and record number.
        road = MARKED_LATE if record.answered else "late"
        self.by_id[record.transaction_id].append((road, record.ocmf))
        if not record.answered:
            self.last_late = record.transaction_id
        return True

    def crashed(self, directory: Path) -> None:
        """The module died: was its last late publication noted in the journal?

        Only the last can be unnoted: the note is the next effect after a publication.
        """
        transaction_id, self.last_late = self.last_late, None
        if transaction_id is None:
            return
        path = directory / entry_file_name(transaction_id)
        if not path.exists():
            return  # archived or retired: the restart does not publish it again either
        if decode_entry(path.read_bytes()).data.get("late_published_at"):
            return
        deliveries = self.by_id[transaction_id]
        road, ocmf = deliveries[-1]
        if road == "late":
            deliveries[-1] = (CUT_LATE, ocmf)

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

    def __init__(
        self, base: Path, sessions: int, crashes: int, seed: int, config: ModuleConfig
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = ManualClock(START)
        self.began = self.clock.monotonic()
        self.device = SimulatedMeter(
            self.clock, OcmfSigner.generate(), MeterConfig(api="v2", min_transaction_seconds=120)
        )
        self.plan = CrashPlan(self.rng, crashes, sessions)
        self.transport = CrashingTransport(self.device, self.plan)
        self.config = config
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
                self.deliveries.crashed(self.directory)
                self.restarts += 1

    def crashed(self) -> None:
        """The process died: a new one starts on the same journal and meter."""
        self.deliveries.crashed(self.directory)
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
    # A record whose only copy is one the crash cut before the journal noted it is lost.
    delivered = {
        tid for tid, d in year.deliveries.by_id.items() if any(road != CUT_LATE for road, _ in d)
    }
    lost = [tid for tid in at_meter if tid not in delivered]
    # Neither the marked copy of an answered record (see Deliveries.publish) nor a copy the
    # crash cut before the journal noted it (see the module docstring) is a second bill.
    duplicate = {
        tid: n
        for tid, d in year.deliveries.by_id.items()
        if (n := sum(1 for road, _ in d if road not in NOT_A_BILL)) > 1
    }
    foreign = [
        tid
        for tid, delivered in year.deliveries.by_id.items()
        if tid not in at_meter or any(ocmf != at_meter[tid]["ocmf"] for _, ocmf in delivered)
    ]
    roads = Counter(road for d in year.deliveries.by_id.values() for road, _ in d)
    billed = sum(1 for tid in at_meter if tid in delivered and tid not in foreign)
    return {
        "transactions_at_meter": len(at_meter),
        "records_billed": billed,
        "by_stop_answer": roads["stop"],
        "by_late_road": roads["late"],
        "marked_copies_of_answers": roads[MARKED_LATE],
        "late_cut_by_a_crash": roads[CUT_LATE],
        "late_cut_ids": sorted(
            tid for tid, d in year.deliveries.by_id.items() if any(r == CUT_LATE for r, _ in d)
        )[:20],
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


def crashes_near(log: list[dict[str, Any]], transaction_ids: list[str]) -> dict[str, Any]:
    """The crashes from the session of each id to the next two, to replay them."""
    near: dict[str, Any] = {}
    for transaction_id in transaction_ids:
        session = int(transaction_id[1:])
        near[transaction_id] = [c for c in log if session <= c["session"] <= session + 2]
    return near


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
    work: Path,
    *,
    sessions: int,
    crashes: int,
    seed: int,
    big_journal: int,
    stop_minimum_wait_ms: int | None = None,
) -> dict[str, Any]:
    """The whole run; its figures. ``stop_minimum_wait_ms`` None: the module's default."""
    config = ModuleConfig(ip_address="127.0.0.1")
    if stop_minimum_wait_ms is not None:
        config = replace(config, stop_minimum_wait_ms=stop_minimum_wait_ms)
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
        year = Year(base, sessions, crashes, seed, config)
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
            "crashes_near": crashes_near(
                year.plan.log, figures["duplicate_ids"] + figures["late_cut_ids"]
            ),
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
