"""Three transactions run by the controller, then ``lem-dcbm records export``: all three verify.

The journal is the one the controller wrote while it ran the transactions against the
simulated meter (not a journal made up for the test), and the export is read by a
separate process, as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lem_dcbm.everest.shapes import transaction_request
from lem_dcbm.harness import module_env
from lem_dcbm.ocmf import verify_ocmf
from tests.support.record_rig import Rig, request

pytestmark = pytest.mark.integration


def test_export_after_three_transactions_lists_all_three_verifying(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "base")
    for number in (1, 2, 3):
        transaction_id = f"tx-{number}"
        assert rig.controller.start_transaction(transaction_request(request(transaction_id))).ok
        rig.charge(60.0 * number)
        assert rig.controller.stop_transaction(transaction_id).ok
    key = rig.device.status()["publicKeyOcmf"]
    # The rig's journal lives in <base>/journal: base directory <base>, module id "journal".
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "lem_dcbm",
            "records",
            "export",
            "--journal-dir",
            str(tmp_path / "base"),
            "--module-id",
            "journal",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=module_env(),
        timeout=30,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    rows = json.loads(exported.stdout)
    assert [row["transaction_id"] for row in rows] == ["tx-1", "tx-2", "tx-3"]
    for row in rows:
        record = row["signed_meter_value"]["signed_meter_data"]
        assert record == rig.record_at_meter(row["transaction_id"])
        assert verify_ocmf(record, key)
        assert row["verification"] == {"signature_valid": True, "failed_checks": []}
