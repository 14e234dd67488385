"""Fixtures shared by every test: a real broker and simulator per test, from the harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator, start_simulator


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto for one test, on a free port of 127.0.0.1."""
    with Broker(tmp_path) as broker:
        yield broker


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A plain-HTTP simulator (minimum transaction duration 0) for one test."""
    with start_simulator(tmp_path / "simulator") as sim:
        yield sim


@pytest.fixture
def tls_simulator(tmp_path: Path) -> Iterator[Simulator]:
    """An HTTPS simulator (minimum transaction duration 0) for one test."""
    with start_simulator(tmp_path / "tls_simulator", tls=True) as sim:
        yield sim


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``, give each ``xdist_group`` test its group's id suffix.

    pytest-xdist (3.8) marks a group by appending ``@name`` to ``item._nodeid``, which
    pytest 9 no longer reads (the id lives in ``item._id``): the tests of a group went to
    whichever worker was free, and one worker waited for the quick benchmarks another was
    running. Where xdist's suffix did take (pytest 8), nothing is changed.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if names and "@" not in item.nodeid.rpartition("]")[2]:
            from _pytest.nodeid import NodeId  # pytest 9 only, where the suffix is lost

            grouped = f"{item.nodeid}@{'_'.join(sorted(names))}"
            item._id = NodeId.parse(grouped)  # type: ignore[attr-defined]
