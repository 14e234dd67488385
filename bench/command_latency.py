"""Round trip of ``start_transaction`` / ``stop_transaction`` and the module's share of it.

For each variant (plain HTTP or TLS to the meter, 0 or 50 ms meter latency) one
module runs against its own simulator (minimum transaction duration 0). Each pair is
a start and a stop through the broker and the module, then the same meter requests
made directly by a keep-alive HTTP client (``direct_client.py``). The module's
overhead is the difference, per command, paired run by run: p50 and p99.

Before timing, the simulator's request counts around one module start and one stop
are compared with the direct client's sequence, so the baseline makes the same
requests the module makes.

The broker runs with ``set_tcp_nodelay true`` so that the figures are the module's,
not the broker's: with mosquitto's default, its answer to a call that came back within
the peer's delayed-ACK time (40 ms on Linux) waits for that ACK. One more variant
(``http_0ms_default_broker``) shows that default.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import harness
from direct_client import START_SEQUENCE, STOP_SEQUENCE, DirectClient, sequence_counts


@dataclass(frozen=True)
class Variant:
    """Meter transport and latency, and whether the broker runs with Nagle off."""

    tls: bool
    latency_ms: int
    broker_no_delay: bool = True

    @property
    def name(self) -> str:
        """e.g. ``tls_50ms`` or ``http_0ms_default_broker``."""
        base = f"{'tls' if self.tls else 'http'}_{self.latency_ms}ms"
        return base if self.broker_no_delay else base + "_default_broker"


VARIANTS = (
    Variant(False, 0),
    Variant(False, 50),
    Variant(True, 0),
    Variant(True, 50),
    # As EVerest ships mosquitto: Nagle on at the broker.
    Variant(False, 0, broker_no_delay=False),
)
WARMUP_PAIRS = 3


def meter_requests(sim: harness.Simulator) -> Counter[str]:
    """Meter requests so far per ``"METHOD /path"``, without the loop's livemeasure reads."""
    counts: dict[str, int] = sim.state()["requests"]
    return Counter({k: v for k, v in counts.items() if "livemeasure" not in k})


def learn_sequences(sim: harness.Simulator, caller: harness.Caller, prefix: str) -> dict[str, Any]:
    """Requests of one module start and one stop, the least seen over the warm-up pairs.

    The least per endpoint, because the module's periodic status poll may fall into a
    command's window now and then.
    """
    seen: dict[str, list[Counter[str]]] = {"start": [], "stop": []}
    for i in range(WARMUP_PAIRS):
        transaction_id = f"{prefix}-warm-{i}"
        before = meter_requests(sim)
        caller.call_ok("start_transaction", harness.start_args(transaction_id))
        middle = meter_requests(sim)
        caller.call_ok("stop_transaction", {"transaction_id": transaction_id})
        after = meter_requests(sim)
        seen["start"].append(middle - before)
        seen["stop"].append(after - middle)
    learned = {name: dict(_least(counters)) for name, counters in seen.items()}
    expected = {
        "start": dict(sequence_counts(START_SEQUENCE)),
        "stop": dict(sequence_counts(STOP_SEQUENCE)),
    }
    return {"module": learned, "direct": expected, "match": learned == expected}


def _least(counters: list[Counter[str]]) -> Counter[str]:
    keys = set().union(*counters)
    least = Counter({k: min(c.get(k, 0) for c in counters) for k in keys})
    return +least


def timed(caller: harness.Caller, command: str, args: dict[str, Any]) -> float:
    """Seconds one command took through the broker and the module."""
    began = time.perf_counter()
    caller.call_ok(command, args)
    return time.perf_counter() - began


def timed_direct(action: Callable[[str], None], transaction_id: str) -> float:
    """Seconds the direct client took for one command's requests."""
    began = time.perf_counter()
    action(transaction_id)
    return time.perf_counter() - began


def measure(
    stack: harness.Stack, broker: harness.Broker, variant: Variant, pairs: int
) -> dict[str, Any]:
    """Time ``pairs`` start/stop pairs through the module and directly."""
    name, tls, latency_ms = variant.name, variant.tls, variant.latency_ms
    sim = stack.start_simulator(name, tls=tls, min_transaction_s=0)
    module_id = f"latency_{name}"
    module = stack.start_module(
        module_id, broker, sim.port, tls_cert=sim.cert_path if tls else None
    )
    with harness.VarRecorder(broker) as recorder:
        recorder.wait_count([module_id], 1, 60)
    caller = harness.Caller(broker, module_id)
    direct = DirectClient(sim)
    try:
        sequences = learn_sequences(sim, caller, name)
        if not sequences["match"]:
            harness.say(f"{name}: the module's requests differ from the baseline: {sequences}")
        direct.start(f"{name}-dwarm")
        direct.stop(f"{name}-dwarm")
        sim.set_latency(latency_ms)
        samples: dict[str, list[float]] = {"module_start": [], "module_stop": []}
        samples.update(direct_start=[], direct_stop=[])
        harness.say(f"{name}: {pairs} start/stop pairs")
        for i in range(pairs):
            module_tx, direct_tx = f"{name}-m{i}", f"{name}-d{i}"
            samples["module_start"].append(
                timed(caller, "start_transaction", harness.start_args(module_tx))
            )
            samples["module_stop"].append(
                timed(caller, "stop_transaction", {"transaction_id": module_tx})
            )
            samples["direct_start"].append(timed_direct(direct.start, direct_tx))
            samples["direct_stop"].append(timed_direct(direct.stop, direct_tx))
        connections = sim.state()["connections"]
    finally:
        direct.close()
        caller.close()
    stack.stop_module(module)
    result: dict[str, Any] = {
        "variant": name,
        "tls": tls,
        "latency_ms": latency_ms,
        "broker_no_delay": variant.broker_no_delay,
        "pairs": pairs,
        "sequences": sequences,
        "meter_connections": connections,
    }
    for command in ("start", "stop"):
        module_s = samples[f"module_{command}"]
        direct_s = samples[f"direct_{command}"]
        overhead = [m - d for m, d in zip(module_s, direct_s, strict=True)]
        result[command] = {
            "module": harness.latency_stats(module_s),
            "direct": harness.latency_stats(direct_s),
            "overhead": harness.latency_stats(overhead),
        }
    return result


HEADERS = (
    "variant",
    "command",
    "module p50",
    "module p99",
    "direct p50",
    "direct p99",
    "overhead p50",
    "overhead p99",
)


def rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    """One table row per variant and command."""
    table = []
    for run in runs:
        for command in ("start", "stop"):
            figures = run[command]
            table.append(
                [
                    run["variant"],
                    command,
                    figures["module"]["p50_ms"],
                    figures["module"]["p99_ms"],
                    figures["direct"]["p50_ms"],
                    figures["direct"]["p99_ms"],
                    figures["overhead"]["p50_ms"],
                    figures["overhead"]["p99_ms"],
                ]
            )
    return table


def run(args: argparse.Namespace) -> None:
    """Measure every variant, print the table, write the JSON."""
    pairs = args.pairs or (5 if args.quick else 200)
    with harness.Stack("latency", keep=args.keep) as stack:
        brokers = {True: stack.start_broker(no_delay=True), False: stack.start_broker()}
        runs = [measure(stack, brokers[v.broker_no_delay], v, pairs) for v in VARIANTS]
    harness.print_table(
        f"command round trip over {pairs} pairs, ms (overhead = module - direct, paired)",
        HEADERS,
        rows(runs),
    )
    harness.write_results("command_latency", {"quick": args.quick, "runs": runs}, args.out)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--pairs", type=int, help="start/stop pairs per variant")
    return harness.run_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
