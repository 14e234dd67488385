"""Crash consistency: SIGKILL a process writing the journal at random instants.

A forked child writes transactions through every step in an endless loop and, right after
each ``record()`` returns, tells the parent through a pipe. The parent kills the child
after a random 0-20 ms, then opens the journal itself: it must load, and every write the
child saw confirmed must be there. Kills accumulate in one directory for a while so the
child also starts on a journal that a previous kill left behind.
"""

from __future__ import annotations

import os
import random
import signal
import time
import traceback
from pathlib import Path

import pytest

from lem_dcbm.journal import STEPS, TransactionJournal

pytestmark = pytest.mark.integration

KILLS = 220
#: Kills that share one directory before the test starts a fresh one (bounds load time).
KILLS_PER_DIRECTORY = 20
MAX_DELAY_S = 0.020
SEED = 6_2026


def _transaction_id(round_number: int, index: int) -> str:
    # Path-like and non-ASCII on purpose: ids must never be trusted as file names.
    return f"../r{round_number}/t{index} é"


def _record_for(transaction_id: str) -> str:
    return f'OCMF|{{"TX":"E","ID":"{transaction_id}","GI":"Zähler €"}}|{{"SD":"30 45\\n"}}'


def _child(directory: Path, round_number: int, report: int) -> None:
    """Write forever, one confirmation line per completed ``record()``; never returns."""
    code = 0
    try:
        journal = TransactionJournal(directory)
        index = 0
        while True:
            transaction_id = _transaction_id(round_number, index)
            for step in STEPS:
                ocmf = _record_for(transaction_id) if step == "ocmf_fetched" else None
                journal.record(transaction_id, step, ocmf=ocmf, round=round_number)
                os.write(report, f"{transaction_id}\t{step}\n".encode())
            index += 1
    except BaseException:  # noqa: BLE001 - the parent must hear about anything at all
        os.write(report, ("!" + traceback.format_exc().replace("\n", " | ") + "\n").encode())
        code = 1
    finally:
        os._exit(code)


def _read_first_line(fd: int) -> bytes:
    """Read until the first newline (or the end); return what was read."""
    chunks = []
    while chunk := os.read(fd, 1):
        chunks.append(chunk)
        if chunk == b"\n":
            break
    return b"".join(chunks)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_one_writer(directory: Path, round_number: int, delay_s: float) -> list[str]:
    """Fork a writer, SIGKILL it after ``delay_s``; return its confirmation lines."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(directory, round_number, write_end)
    os.close(write_end)
    try:
        # The kill instant is drawn from after the first confirmed write, so every round
        # tests something however busy the machine is (a fork can take longer than 20 ms).
        first = _read_first_line(read_end)
        time.sleep(delay_s)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        output = (first + _read_all(read_end)).decode()
    finally:
        os.close(read_end)
    lines = output.split("\n")
    errors = [line for line in lines if line.startswith("!")]
    assert not errors, f"writer failed in round {round_number}: {errors[0]}"
    assert os.WIFSIGNALED(status), f"writer ended by itself in round {round_number}"
    assert os.WTERMSIG(status) == signal.SIGKILL
    # The last line may be cut off by the kill: only whole lines were confirmed.
    return lines[:-1]


def test_sigkill_at_random_instants_never_loses_a_confirmed_write(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    confirmed_total = 0
    for round_number in range(KILLS):
        directory = tmp_path / f"journal-{round_number // KILLS_PER_DIRECTORY}"
        confirmed = _kill_one_writer(directory, round_number, rng.uniform(0, MAX_DELAY_S))

        journal = TransactionJournal(directory)  # must load whatever the kill left

        for line in confirmed:
            transaction_id, step = line.split("\t")
            entry = journal.get(transaction_id)
            context = f"round {round_number}: confirmed {step} of {transaction_id!r}"
            assert entry is not None, f"{context}, entry missing"
            assert step in entry.steps, f"{context}, entry has only {entry.steps}"
            if step == "ocmf_fetched":
                assert entry.ocmf == _record_for(transaction_id), context
        assert not list(directory.glob(".tmp-*")), "leftover temporary files not removed"
        assert not (directory / "corrupt").exists(), "a killed write left a corrupt file"
        confirmed_total += len(confirmed)
    # Every round waited for a first confirmed write: the loop tested something each time.
    assert confirmed_total >= KILLS
