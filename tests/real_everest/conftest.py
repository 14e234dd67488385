"""Fixtures of the real-manager tier: the build per framework, the installed module folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lem_dcbm.harness import Broker, Simulator, start_simulator
from tests.real_everest.everest_run import (
    EverestBuild,
    ManagerRun,
    ModuleFolders,
    find_build,
    install_module_folders,
)


@pytest.fixture
def everest_build(request: pytest.FixtureRequest) -> EverestBuild:
    """The build of the framework in ``request.param``; skips when none is configured."""
    found = find_build(request.param)
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="session")
def module_folders(tmp_path_factory: pytest.TempPathFactory) -> ModuleFolders:
    """lem-dcbm installed as install.md says, and the EvseManager role, once per session."""
    return install_module_folders(tmp_path_factory.mktemp("everest-modules"))


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[Simulator]:
    """The meter simulator over plain HTTP."""
    with start_simulator(tmp_path / "simulator") as sim:
        yield sim


@pytest.fixture
def manager_run(
    request: pytest.FixtureRequest,
    everest_build: EverestBuild,
    mosquitto: Broker,
    meter: Simulator,
    tmp_path: Path,
) -> Iterator[ManagerRun]:
    """A not yet started manager run; whatever is left of it is ended afterwards."""
    # Asked for here, after the build: pytest sets session fixtures up first, and the
    # install (about 20 s) must not run for a test that is skipped for want of a build.
    folders: ModuleFolders = request.getfixturevalue("module_folders")
    run = ManagerRun(everest_build, tmp_path / "everest", folders, mosquitto, meter)
    try:
        yield run
    finally:
        run.kill()
