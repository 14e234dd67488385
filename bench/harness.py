"""Shared benchmark machinery: broker, simulated meters and modules as real processes.

Each benchmark builds a ``Stack`` (a work directory and every process it started, from
the package's ``lem_dcbm.harness``), records the module's var publications with their
receive times on the monotonic clock (``VarRecorder``), samples ``/proc`` for CPU,
memory, threads and descriptors (``proc_sample``), and writes its figures as JSON and
as a printed table. Nothing here imports from ``tests/``: the benchmarks run on their own.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lem_dcbm
from lem_dcbm.errors import LemDcbmError
from lem_dcbm.everest.bus import Message, MqttBus
from lem_dcbm.everest.envelope import EnvelopeError, decode
from lem_dcbm.harness import Broker, HarnessError, ModuleProcess, ProcessGroup, Simulator
from lem_dcbm.harness import write_config as write_module_config
from lem_dcbm.tools.consumer import EverestConsumer

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PREFIX = "everest/"
START_TIMEOUT_S = 30.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TRANSACTION_REQUEST: dict[str, Any] = {
    "evse_id": "DE*LEM*E0001",
    "identification_status": "ASSIGNED",
    "identification_type": "ISO14443",
    "identification_flags": ["RFID_PLAIN"],
    "identification_data": "04A2B3C4D5E6F7",
}


class BenchError(HarnessError):
    """A benchmark step failed; the message says which and where the logs are."""


def say(text: str) -> None:
    """One progress line on stderr (stdout carries the tables)."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------


def compile_package() -> None:
    """Write the package's bytecode cache, as installing the wheel does.

    Without it, a checkout run under ``PYTHONDONTWRITEBYTECODE`` compiles every module at
    each start, which costs a module 0.3-0.6 MB of RSS that an installed one does not have.
    """
    compileall.compile_dir(Path(lem_dcbm.__file__).parent, quiet=1)


class Stack(ProcessGroup):
    """A temporary work directory and the processes of one benchmark; all stop on exit.

    Modules run at their default log level with the manifest's defaults except the
    meter's address, from the package's bytecode cache: what is measured is the module as
    shipped.
    """

    def __init__(self, name: str, *, keep: bool = False) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix=f"lem-bench-{name}-")))
        self.keep = keep
        compile_package()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and exc_type is not KeyboardInterrupt:
            exited = [m for m in self.modules if m.process.poll() is not None]
            for module in (exited or self.modules)[:3]:
                name = module.log_path.parent.name
                say(f"log of module {name} (last lines):\n{module.log_tail()}")
        self.close()
        if self.keep:
            say(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start_broker(self, *, no_delay: bool = False) -> Broker:
        """Start mosquitto on a free port; ``no_delay`` sets ``set_tcp_nodelay true``."""
        return self.broker(no_delay=no_delay)

    def start_simulator(
        self, name: str = "meter", *, min_transaction_s: float = 0, **options: Any
    ) -> Simulator:
        """Start a simulator and wait until it answers (options as for ``start_simulator``)."""
        return self.simulator(name, min_transaction_seconds=min_transaction_s, **options)

    def start_simulators(self, count: int, **options: Any) -> list[Simulator]:
        """Start ``count`` simulators in parallel and wait for all of them."""
        sims = [self.simulator(f"meter-{i}", wait=False, **options) for i in range(count)]
        return [sim.wait_listening() for sim in sims]

    def start_module(
        self,
        module_id: str,
        broker: Broker,
        meter_port: int,
        *,
        tls_cert: Path | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> ModuleProcess:
        """Start ``python -m lem_dcbm run`` for one module."""
        values: dict[str, Any] = {"ip_address": "127.0.0.1", "port": meter_port}
        if tls_cert is not None:
            values["meter_tls_certificate"] = tls_cert.read_text()
        values.update(overrides or {})
        config = write_module_config(self.workdir / module_id / "config.yaml", values, module_id)
        return self.module(module_id, config, broker, log_level=None)

    def stop_module(self, module: ModuleProcess, timeout_s: float = 10.0) -> int:
        """SIGTERM one module and return its exit code."""
        return module.terminate(timeout=timeout_s)


# -- var publications and commands ----------------------------------------------------------


class VarRecorder:
    """Records every module's publications of one var with their receive times."""

    def __init__(self, broker: Broker, var: str = "powermeter") -> None:
        self._times: dict[str, list[float]] = {}
        self._last: dict[str, Any] = {}
        self._changed = threading.Condition()
        self._bus = MqttBus(
            broker.settings, f"bench-rec-{uuid.uuid4().hex[:8]}", clean_session=True
        )
        self._bus.subscribe(f"{PREFIX}modules/+/impl/main/var/{var}", self._on_message)
        self._bus.connect(START_TIMEOUT_S)

    def __enter__(self) -> VarRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect."""
        self._bus.close()

    def _on_message(self, message: Message) -> None:
        module_id = message.topic[len(PREFIX) :].split("/")[1]
        try:
            data = decode(message.payload).data
        except EnvelopeError:
            return
        with self._changed:
            self._times.setdefault(module_id, []).append(message.received_at)
            self._last[module_id] = data.get("data") if isinstance(data, dict) else data
            self._changed.notify_all()

    def times(self, module_id: str) -> list[float]:
        """Receive times of every publication of ``module_id`` so far."""
        with self._changed:
            return list(self._times.get(module_id, ()))

    def last(self, module_id: str) -> Any:
        """The latest value ``module_id`` published."""
        with self._changed:
            return self._last.get(module_id)

    def wait_count(self, module_ids: Iterable[str], count: int, timeout_s: float) -> float:
        """Wait until each module published ``count`` times; return the monotonic time then."""
        wanted = list(module_ids)

        def enough() -> bool:
            return all(len(self._times.get(m, ())) >= count for m in wanted)

        with self._changed:
            if not self._changed.wait_for(enough, timeout_s):
                short = [m for m in wanted if len(self._times.get(m, ())) < count]
                raise BenchError(
                    f"{len(short)} module(s) published fewer than {count} times within "
                    f"{timeout_s:.0f} s: {', '.join(short[:5])}"
                )
        return time.monotonic()


class Caller(EverestConsumer):
    """Calls one module's commands the way an EVerest consumer module does (QoS 2)."""

    def __init__(self, broker: Broker, module_id: str) -> None:
        super().__init__(broker.settings, module_id, origin=f"bench_{uuid.uuid4().hex[:8]}")
        self.connect(START_TIMEOUT_S)

    def call_ok(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call ``command``; raise ``BenchError`` unless the module answered status OK."""
        result = self.call(command, args, 30)
        retval = result.retval if isinstance(result.retval, dict) else {}
        if result.error_type or retval.get("status") != "OK":
            raise BenchError(f"{command} failed: {result}")
        return retval


def start_args(transaction_id: str) -> dict[str, Any]:
    """Arguments of ``start_transaction`` for one transaction id."""
    return {"value": {**TRANSACTION_REQUEST, "transaction_id": transaction_id}}


# -- /proc ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One look at a process in ``/proc``."""

    at: float
    cpu_s: float
    rss_kb: int
    hwm_kb: int
    threads: int
    fds: int


def proc_sample(pid: int) -> ProcSample:
    """CPU seconds (user + system), RSS, peak RSS (VmHWM), threads and open descriptors."""
    at = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may contain spaces: utime and stime are 14, 15.
    fields = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return ProcSample(
        at=at,
        cpu_s=cpu_s,
        rss_kb=int(status.get("VmRSS", "0 kB").split()[0]),
        hwm_kb=int(status.get("VmHWM", "0 kB").split()[0]),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def cpu_percent(first: ProcSample, last: ProcSample) -> float:
    """CPU used between two samples, in percent of one core."""
    wall = last.at - first.at
    return 100.0 * (last.cpu_s - first.cpu_s) / wall if wall > 0 else 0.0


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def periods(times: Sequence[float]) -> list[float]:
    """Differences between consecutive receive times."""
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def period_stats(times: Sequence[float], interval_s: float = 1.0) -> dict[str, float]:
    """Count, mean, p1, p50, p99, min, max and the deviations from ``interval_s``."""
    gaps = periods(times)
    deviations = [abs(g - interval_s) for g in gaps]
    return {
        "count": len(times),
        "mean_s": (times[-1] - times[0]) / len(gaps) if gaps else float("nan"),
        "p1_s": percentile(gaps, 1),
        "p50_s": percentile(gaps, 50),
        "p99_s": percentile(gaps, 99),
        "min_s": min(gaps, default=float("nan")),
        "max_s": max(gaps, default=float("nan")),
        "p99_deviation_s": percentile(deviations, 99),
        "worst_deviation_s": max(deviations, default=float("nan")),
    }


def window(times: Sequence[float], start: float, end: float) -> list[float]:
    """The times within ``[start, end)``."""
    return [t for t in times if start <= t < end]


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean and max of durations, in milliseconds."""
    return {
        "count": len(samples_s),
        "p50_ms": 1000 * percentile(samples_s, 50),
        "p99_ms": 1000 * percentile(samples_s, 99),
        "mean_ms": 1000 * sum(samples_s) / len(samples_s) if samples_s else float("nan"),
        "max_ms": 1000 * max(samples_s, default=float("nan")),
    }


# -- output --------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument(
        "--quick", action="store_true", help="short durations: only checks that it runs"
    )
    result.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    result.add_argument("--out", type=Path, help="JSON output (default bench/results/NAME.json)")
    return result


def write_results(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``data`` plus the mode and date as JSON; return the path."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    say(f"results written to {path}")
    return path


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, everything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """A plain-text table with aligned columns."""
    rows_list = [list(row) for row in rows]
    cells = [[fmt(c, digits) for c in row] for row in rows_list]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for raw, row in zip(rows_list, cells, strict=True):
        # Text left, numbers right.
        lines.append(
            "  ".join(
                c.rjust(w) if isinstance(v, (int, float)) else c.ljust(w)
                for v, c, w in zip(raw, row, widths, strict=True)
            )
        )
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a titled table on stdout."""
    print(f"\n{title}\n{table(headers, list(rows))}", flush=True)


def run_main(body: Any, args: argparse.Namespace) -> int:
    """Run ``body(args)``; on ``BenchError`` print the error and return 1."""
    try:
        body(args)
    except (HarnessError, LemDcbmError) as err:
        say(f"FAILED: {err}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    return 0
