"""The simulator stands for the meter: it keeps its own tables and imports nothing of the client."""

from __future__ import annotations

import ast
from pathlib import Path

import lem_dcbm.simulator
from lem_dcbm.meter import models
from lem_dcbm.simulator import meter_bits

SIMULATOR = Path(lem_dcbm.simulator.__file__).parent
#: What the simulator may import from this project besides itself: time as a dependency.
#: The simulator may use its own package, the clock, the CLI plumbing, the package's
#: exception tree (a leaf: its refusals are LemDcbmErrors too) and its JSON types (a leaf of
#: type aliases), nothing of the client.
ALLOWED = (
    "lem_dcbm.simulator",
    "lem_dcbm.clock",
    "lem_dcbm.cli_common",
    "lem_dcbm.errors",
    "lem_dcbm.json_types",
)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``source`` names, made absolute."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # "from lem_dcbm import meter" imports the module lem_dcbm.meter.
            found.update(f"{base}.{alias.name}" for alias in node.names)
            found.add(base)
    return found


def project_imports(path: Path) -> set[str]:
    """The ``lem_dcbm`` modules that ``path`` imports."""
    modules = imported_modules(path.read_text(), "lem_dcbm.simulator")
    return {m for m in modules if m == "lem_dcbm" or m.startswith("lem_dcbm.")}


def test_the_scanner_sees_every_form_of_import() -> None:
    source = (
        "import lem_dcbm.meter.models\n"
        "from lem_dcbm import meter\n"
        "from ..meter.models import STATUS_BITS\n"
        "def late():\n    from lem_dcbm.core import controller\n"
    )
    modules = imported_modules(source, "lem_dcbm.simulator")
    assert "lem_dcbm.meter.models" in modules
    assert "lem_dcbm.meter" in modules
    assert "lem_dcbm.core.controller" in modules


def test_the_simulator_imports_nothing_of_the_client() -> None:
    files = sorted(SIMULATOR.glob("*.py"))
    assert len(files) > 10
    for path in files:
        for module in project_imports(path):
            assert module.startswith(ALLOWED), f"{path.name} imports {module}"


def test_the_status_table_gives_the_values_the_meter_is_known_to_show() -> None:
    masks = meter_bits.BIT
    assert [bit.position for bit in meter_bits.STATUS_TABLE] == list(range(8))
    idle = masks["suLinkStatusIsOk"] | masks["timeSyncStatusIsOk"]
    assert idle == meter_bits.IDLE_STATUS == 17
    assert idle | masks["transactionIsOnGoing"] == meter_bits.IN_TRANSACTION_STATUS == 21
    blocking = [bit.position for bit in meter_bits.PRECONDITIONS]
    assert blocking == [0, 1, 2, 4]


def test_the_simulator_and_the_client_read_the_bits_alike() -> None:
    """Two tables written separately; a difference means one of them is wrong."""
    assert meter_bits.STATUS_NAMES == models.STATUS_BITS
    assert meter_bits.ERROR_NAMES == models.ERROR_BITS
    assert meter_bits.BILLABLE_STATUS == models.BILLABLE_TRANSACTION_STATUS
