"""Fixtures of the simulated-charger tier: the build, lem-dcbm installed, a charger factory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import Broker, start_simulator
from lem_dcbm.records.checks import RecordExpectation
from tests.real_everest.everest_run import ModuleFolders, install_module_folders
from tests.sil.charger import (
    LEM_DCBM,
    NEEDS,
    OCPP16,
    YETI_ID,
    Charger,
    SilBuild,
    find_sil_build,
)
from tests.sil.csms import Csms

ChargerFactory = Callable[..., Charger]


@pytest.fixture(scope="session")
def sil_build() -> SilBuild:
    """The build of ``build-sil.sh``; skips the test (one line) when none is named."""
    found = find_sil_build()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="session")
def sil_modules(tmp_path_factory: pytest.TempPathFactory) -> ModuleFolders:
    """lem-dcbm installed as install.md says (copies, own ``.venv``), once per session."""
    return install_module_folders(tmp_path_factory.mktemp("sil-modules"))


@pytest.fixture
def make_charger(
    request: pytest.FixtureRequest, sil_build: SilBuild, mosquitto: Broker, tmp_path: Path
) -> Iterator[ChargerFactory]:
    """Build a charger for a meter (``lem-dcbm``, ``cpp``, ``api``); all of it ends after."""
    made: list[tuple[Charger, Any, Csms]] = []

    def make(
        meter: str = LEM_DCBM, *, min_transaction_seconds: float = 0, **options: Any
    ) -> Charger:
        needed = NEEDS.get(meter)
        if needed and not sil_build.has_module(needed):
            pytest.skip(f"the build has no {needed} (build-sil.sh EXTRA_MODULES)")
        if options.get("ocpp") == OCPP16 and not sil_build.has_module("OCPP"):
            pytest.skip("the build has no OCPP (build-sil.sh EXTRA_MODULES=OCPP)")
        # Asked for here, after the build: the install (about 20 s) is not for a skipped test.
        folders: ModuleFolders = request.getfixturevalue("sil_modules")
        # The meter meters what the simulated car draws: the board's own powermeter var.
        simulator = start_simulator(
            tmp_path / "simulator",
            min_transaction_seconds=min_transaction_seconds,
            extra_args=[
                "--load-from-mqtt",
                f"everest/modules/{YETI_ID}/impl/powermeter/var/powermeter",
                "--load-broker",
                f"{mosquitto.host}:{mosquitto.port}",
            ],
        )
        status = simulator.control("GET", "/v1/status")
        csms = Csms(
            meter_key=str(status["publicKeyOcmf"]),
            expectation=RecordExpectation(meter_id=str(status["meterId"])),
        ).start()
        charger = Charger(
            build=sil_build,
            workdir=tmp_path / "charger",
            modules_dir=folders.root,
            broker=mosquitto,
            simulator=simulator,
            csms=csms,
            meter=meter,
            **options,
        )
        made.append((charger, simulator, csms))
        return charger

    yield make
    for charger, simulator, csms in made:
        with contextlib.suppress(Exception):  # a manager that hangs is killed below
            charger.shutdown(30)
        charger.kill()
        simulator.stop()
        csms.stop()
