"""A long fuzz run of both doors: 100 000 command payloads and 20 000 meter answers.

The same strategies and invariants as ``tests/unit/test_fuzz.py`` (which runs 2 000
examples per target in CI), in one process, counting instead of stopping at the first
failure: crashes (anything raised out of the dispatcher or the client), routable requests
without exactly one answer, answers that break the interface, retained commands executed,
and the RSS of this process (the hypothesis engine included) before and after. Needs the
test extras (hypothesis).

``--wire-answers N`` also sends N meter answers over real sockets (``HostileMeter``, as in
``tests/integration/test_meter_fuzz_sockets.py``): truncations, slow drips, resets and
unparsable heads besides random statuses and bodies, counting crashes, calls that took
longer than their bound and results built from an invalid answer. About 35 ms an answer
on average (a drip costs its timeout), so it is off by default.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import harness
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lem_dcbm.clock import ManualClock  # noqa: E402
from lem_dcbm.errors import MeterError  # noqa: E402
from lem_dcbm.meter.client import MeterClient  # noqa: E402
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter  # noqa: E402
from lem_dcbm.simulator.ocmf_signer import OcmfSigner  # noqa: E402
from tests.support.fuzz import (  # noqa: E402
    ANY_PAYLOADS,
    COMMANDS,
    WIRE_ACTS,
    WIRE_CALLS,
    CannedTransport,
    CommandTarget,
    check_answer,
    every_client_call,
    meter_answers,
    routable_calls,
    wire_call_problem,
)
from tests.support.hostile_meter import Act, HostileMeter  # noqa: E402

#: What the socket soak counts, besides the answers sent.
WIRE_PROBLEMS = ("crash", "slow", "result from an invalid answer", "good answer refused")


def rss_mb() -> float:
    """This process's resident set, MB."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else 0.0


def soak(count: int, strategy: st.SearchStrategy[Any], body: Any) -> None:
    """Run ``body`` on ``count`` examples of ``strategy`` (random seed, no shrinking)."""
    run = settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(body))
    run()


def run(args: argparse.Namespace) -> None:
    """Soak, print the table, write the JSON."""
    payloads = args.payloads or (2000 if args.quick else 100_000)
    answers = args.answers or (500 if args.quick else 20_000)
    found: Counter[str] = Counter()
    before = rss_mb()

    def routable(call: tuple[str, bytes, str, str]) -> None:
        command, payload, call_id, _origin = call
        found["routable requests"] += 1
        try:
            sent = CommandTarget().feed(command, payload)
        except Exception:  # noqa: BLE001 - counted, the soak goes on
            found["crashes"] += 1
            return
        if len(sent) != 1:
            found["routable requests not answered exactly once"] += 1
        elif check_answer(command, sent[0], call_id) is not None:
            found["answers breaking the interface"] += 1

    def random_payload(item: tuple[str, bytes]) -> None:
        found["random payloads"] += 1
        try:
            CommandTarget().feed(*item)
        except Exception:  # noqa: BLE001
            found["crashes"] += 1

    def retained(call: tuple[str, bytes, str, str]) -> None:
        target = CommandTarget()
        try:
            target.feed(call[0], call[1], retain=True)
        except Exception:  # noqa: BLE001
            found["crashes"] += 1
        if target.handled:
            found["retained commands executed"] += 1

    def meter(item: tuple[tuple[int, str], str]) -> None:
        (status, body), api = item
        found["meter answers"] += 1
        try:
            every_client_call(MeterClient(CannedTransport(status, body), api_version=api))
        except MeterError:
            pass
        except Exception:  # noqa: BLE001
            found["crashes"] += 1

    third = max(1, payloads // 3)
    soak(third, routable_calls(), routable)
    soak(third, st.tuples(st.sampled_from(COMMANDS), ANY_PAYLOADS), random_payload)
    soak(payloads - 2 * third, routable_calls(), retained)
    soak(answers, st.tuples(meter_answers(), st.sampled_from(["v1", "v2"])), meter)
    if args.wire_answers:
        server = HostileMeter(SimulatedMeter(ManualClock(), OcmfSigner.generate(), MeterConfig()))

        def wire(item: tuple[Any, Act]) -> None:
            found["meter answers over sockets"] += 1
            problem = wire_call_problem(server, *item)
            if problem is not None:
                found[f"sockets: {problem[0]}"] += 1

        try:
            soak(args.wire_answers, st.tuples(st.sampled_from(WIRE_CALLS), WIRE_ACTS), wire)
        finally:
            server.close()
    after = rss_mb()
    rows = [
        ["command payloads", payloads],
        ["meter answers", found["meter answers"]],
        ["crashes", found["crashes"]],
        [
            "routable requests not answered exactly once",
            found["routable requests not answered exactly once"],
        ],
        ["answers breaking the interface", found["answers breaking the interface"]],
        ["retained commands executed", found["retained commands executed"]],
        *(
            [
                ["meter answers over sockets", found["meter answers over sockets"]],
                *[[f"sockets: {name}", found[f"sockets: {name}"]] for name in WIRE_PROBLEMS],
            ]
            if args.wire_answers
            else []
        ),
        ["RSS before, MB", round(before, 1)],
        ["RSS after, MB", round(after, 1)],
    ]
    harness.print_table("fuzz soak", ("figure", "value"), rows)
    harness.write_results("fuzz_soak", {"quick": args.quick, "rows": rows}, args.out)
    bad = found["crashes"] + found["routable requests not answered exactly once"]
    bad += found["answers breaking the interface"] + found["retained commands executed"]
    bad += sum(found[f"sockets: {name}"] for name in WIRE_PROBLEMS)
    if bad:
        raise harness.BenchError(f"{bad} invariant violations")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--payloads", type=int, help="command payloads (default 100 000)")
    parser.add_argument("--answers", type=int, help="meter answers (default 20 000)")
    parser.add_argument(
        "--wire-answers",
        type=int,
        default=0,
        help="meter answers over real sockets, hostile ones included (default 0: off)",
    )
    args = parser.parse_args(argv)
    return harness.run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
