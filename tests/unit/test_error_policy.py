"""Which conditions reach EVerest per error profile: VendorWarning only where it is tolerated."""

from __future__ import annotations

import logging

import pytest

from lem_dcbm.everest.error_policy import PROFILES, PolicedOutputs
from tests.support.fake_outputs import RecordingOutputs


@pytest.mark.parametrize("profile", ["everest-2025.12", "everest-main"])
def test_warnings_are_logged_where_evse_manager_would_stop_charging(
    profile: str, caplog: pytest.LogCaptureFixture
) -> None:
    outputs = RecordingOutputs()
    policed = PolicedOutputs(outputs, profile)
    caplog.set_level(logging.INFO, logger="lem_dcbm.everest.error_policy")
    policed.raise_error("VendorWarning", "TransactionNotBillable", "status 25", "Low")
    policed.raise_error("VendorWarning", "TransactionNotBillable", "status 25", "Low")
    policed.clear_error("VendorWarning", "TransactionNotBillable")
    policed.raise_error("VendorError", "muFatalErrorOccured", "fatal", "High")
    policed.raise_error("CommunicationFault", "", "unreachable", "High")
    assert outputs.events == [
        ("raise", ("VendorError", "muFatalErrorOccured")),
        ("raise", ("CommunicationFault", "")),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "not raised as VendorWarning" in m]) == 1
    assert "TransactionNotBillable cleared" in messages


def test_warnings_are_raised_where_evse_manager_tolerates_them() -> None:
    outputs = RecordingOutputs()
    policed = PolicedOutputs(outputs, "everest-2026.02")
    policed.raise_error("VendorWarning", "TemperatureWarning", "hot", "Low")
    policed.clear_error("VendorWarning", "TemperatureWarning")
    assert outputs.events == [
        ("raise", ("VendorWarning", "TemperatureWarning")),
        ("clear", ("VendorWarning", "TemperatureWarning")),
    ]


def test_profiles_are_the_manifests() -> None:
    from lem_dcbm.config import load_manifest

    assert tuple(load_manifest()["config"]["error_profile"]["enum"]) == PROFILES
    with pytest.raises(ValueError, match="error profile"):
        PolicedOutputs(RecordingOutputs(), "everest-1.0")
