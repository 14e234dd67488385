"""What the modules a running module imports cost in memory, one by one.

A module's code stays in memory for the life of the process, so most of the module's
RSS is set at import. One module runs against the simulator (TLS, a transaction started
and stopped) with ``PYTHONPROFILEIMPORTTIME``, which lists every module it loads, in the
order each import completed (dependencies first). A fresh interpreter then imports the
same modules in that order under tracemalloc: what each import adds is that module's own
cost (its code, its module-level objects). The table shows the costliest modules, the
totals per package, and VmRSS once all are imported.

An installed wheel loads the package from its bytecode cache; an editable checkout with
``PYTHONDONTWRITEBYTECODE`` set compiles every module from source at each start, which
costs memory of its own (``python -m compileall lem_dcbm`` writes the cache). The last
line says which it was.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import harness

import lem_dcbm

#: Run in a fresh interpreter: import the modules (JSON on stdin), print JSON of their
#: costs. Each module's own cost is what its execution allocated (reading and
#: unmarshalling its code included) less what the imports it made allocated, so a
#: package's ``__init__`` is not charged with the modules it pulls in. With ``rss`` as
#: argument, nothing is traced and only VmRSS after the imports is printed.
MEASURE = """
import importlib, importlib._bootstrap_external as external, json, sys, tracemalloc
names = json.loads(sys.stdin.read())
costs, nested = {}, []

def measured(original):
    def exec_module(self, module):
        start = tracemalloc.get_traced_memory()[0]
        nested.append(0)
        try:
            return original(self, module)
        finally:
            inner = nested.pop()
            total = tracemalloc.get_traced_memory()[0] - start
            costs[module.__name__] = costs.get(module.__name__, 0) + total - inner
            if nested:
                nested[-1] += total
    return exec_module

traced = sys.argv[1:] != ["rss"]
if traced:
    for loader in (external._LoaderBasics, external.ExtensionFileLoader):
        loader.exec_module = measured(loader.exec_module)
    tracemalloc.start()
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        pass
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
print(json.dumps({"costs": costs, "rss_kb": rss}))
"""


def measure(names: list[str], *options: str) -> dict[str, Any]:
    """Run ``MEASURE`` over ``names`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *options],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def imported_by_a_running_module() -> list[str]:
    """The modules a module loads from start to stop, dependencies first."""
    with harness.Stack("import_cost") as stack:
        broker = stack.start_broker()
        sim = stack.start_simulator("meter", tls=True, min_transaction_s=0)
        values = {"ip_address": "127.0.0.1", "port": sim.port}
        values["meter_tls_certificate"] = sim.cert_path.read_text()
        config = harness.write_module_config(stack.workdir / "m" / "config.yaml", values, "m")
        module = stack.module(
            "m", config, broker, log_level=None, env={"PYTHONPROFILEIMPORTTIME": "1"}
        )
        with harness.VarRecorder(broker) as recorder:
            recorder.wait_count(["m"], 1, 60)
            caller = harness.Caller(broker, "m")
            caller.call_ok("start_transaction", harness.start_args("import-cost"))
            caller.call_ok("stop_transaction", {"transaction_id": "import-cost"})
            caller.close()
        stack.stop_module(module)
        log = module.log_path.read_text()
    return [
        line.rpartition("|")[2].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and "|" in line and "imported package" not in line
    ]


def package(name: str) -> str:
    """``lem_dcbm`` for the package's own modules, else the top-level name."""
    return name.partition(".")[0]


def run(args: argparse.Namespace) -> None:
    """Find the modules, measure each one's import, print the tables, write the JSON."""
    names = imported_by_a_running_module()
    costs: dict[str, int] = measure(names)["costs"]
    rss_kb: int = measure(names, "rss")["rss_kb"]
    by_package: Counter[str] = Counter()
    for name, size in costs.items():
        by_package[package(name)] += size
    top = sorted(costs.items(), key=lambda item: -item[1])[: args.top]
    harness.print_table(
        f"costliest of {len(costs)} modules (tracemalloc, kB)",
        ("module", "kB"),
        [[name, size / 1024] for name, size in top],
    )
    harness.print_table(
        "per package (kB)",
        ("package", "modules", "kB"),
        [
            [name, sum(1 for m in costs if package(m) == name), size / 1024]
            for name, size in by_package.most_common(args.top)
        ],
    )
    total = sum(costs.values())
    own = by_package["lem_dcbm"]
    harness.say(
        f"all imports {total / 1024:.0f} kB traced, lem_dcbm {own / 1024:.0f} kB; "
        f"VmRSS after importing them (untraced) {rss_kb / 1024:.1f} MB"
    )
    cached = Path(importlib.util.cache_from_source(lem_dcbm.__file__)).exists()
    harness.say(f"lem_dcbm loaded from its bytecode cache: {'yes' if cached else 'no'}")
    harness.write_results(
        "import_cost",
        {"quick": args.quick, "rss_kb": rss_kb, "bytecode_cache": cached, "costs": costs},
        args.out,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    return harness.run_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
