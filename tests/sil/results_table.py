"""The scenario table of docs/everest-sil.md from a ``$LEM_DCBM_SIL_RESULTS`` file.

``python -m tests.sil.results_table /tmp/sil-results.jsonl`` prints one Markdown row per
scenario and OCPP version, lem-dcbm (module or API mode) beside EVerest's C++ module;
the last run of each wins.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def cell(run: dict[str, Any] | None) -> str:
    """What reached the CSMS in one run, per transaction, with the late road and notes."""
    if run is None:
        return "not run"
    bills = "; ".join(f"tx{i + 1}: {text}" for i, text in enumerate(run["bills"])) or "no tx"
    if run.get("late_road"):
        bills += f"; late road: {run['late_road']} verified"
    notes = [note for note in run.get("notes", []) if note]
    return bills + (f" ({'; '.join(notes)})" if notes else "")


def table(lines: list[str]) -> str:
    """The Markdown table."""
    runs: dict[tuple[str, str, str], dict[str, Any]] = {}
    order: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        run = json.loads(line)
        meter = "cpp" if run["meter"] == "cpp" else "lem-dcbm"
        runs[(run["scenario"], run["ocpp"], meter)] = run
        if (run["scenario"], run["ocpp"]) not in order:
            order.append((run["scenario"], run["ocpp"]))
    rows = [
        "| scenario | OCPP | lem-dcbm | EVerest's C++ LemDCBM400600 |",
        "| --- | --- | --- | --- |",
    ]
    for scenario, ocpp in order:
        mine = cell(runs.get((scenario, ocpp, "lem-dcbm")))
        theirs = runs.get((scenario, ocpp, "cpp"))
        floor = "n/a (no API mode)" if scenario.startswith("API mode") else cell(theirs)
        rows.append(f"| {scenario} | {ocpp} | {mine} | {floor} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]).read_text().splitlines()))
