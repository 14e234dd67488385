"""Errors are raised once, cleared once, and a clear repeats the raised error."""

from __future__ import annotations

import json

import pytest

from lem_dcbm.clock import ManualClock
from lem_dcbm.everest.raised_errors import ErrorReporter
from lem_dcbm.everest.topics import Topics


def make(
    namespace: str = "powermeter",
) -> tuple[ErrorReporter, list[tuple[str, dict]], ManualClock]:
    sent: list[tuple[str, dict]] = []
    clock = ManualClock()
    reporter = ErrorReporter(
        Topics("everest/", "pm"),
        lambda topic, payload: sent.append((topic, json.loads(payload))),
        namespace=namespace,
        clock=clock,
    )
    return reporter, sent, clock


def test_raise_is_idempotent_and_clear_repeats_the_raised_error() -> None:
    reporter, sent, clock = make()
    assert reporter.raise_error("CommunicationFault", "", "no answer")
    clock.advance(5)
    assert not reporter.raise_error("CommunicationFault", "", "still no answer")
    assert reporter.is_active("CommunicationFault")
    assert reporter.clear_error("CommunicationFault", "")
    assert not reporter.clear_error("CommunicationFault", "")
    assert not reporter.is_active("CommunicationFault")
    (raise_topic, raised), (clear_topic, cleared) = sent
    assert (
        raise_topic
        == clear_topic
        == "everest/modules/pm/impl/main/error/powermeter/CommunicationFault"
    )
    assert raised["msg_type"] == "RaiseError"
    assert cleared["msg_type"] == "ClearError"
    assert raised["data"] == {
        "type": "powermeter/CommunicationFault",
        "sub_type": "",
        "message": "no answer",
        "description": "Communication with the underlying hardware or device has a fault",
        "origin": {"module_id": "pm", "implementation_id": "main"},
        "severity": "High",
        "timestamp": "2026-11-22T10:00:00.000Z",
        "uuid": raised["data"]["uuid"],
        "state": "Active",
        "vendor_id": "",
    }
    assert cleared["data"] == {**raised["data"], "state": "ClearedByModule"}


def test_sub_types_are_separate_errors_and_a_new_raise_gets_a_new_uuid() -> None:
    reporter, sent, _ = make("generic")
    reporter.raise_error("VendorWarning", "TemperatureWarning", "hot", "Medium")
    reporter.raise_error("VendorWarning", "OcmfSignature", "bad signature", "Low")
    reporter.clear_error("VendorWarning", "TemperatureWarning")
    reporter.raise_error("VendorWarning", "TemperatureWarning", "hot again", "Medium")
    types = [(m["msg_type"], m["data"]["type"], m["data"]["sub_type"]) for _, m in sent]
    assert types == [
        ("RaiseError", "generic/VendorWarning", "TemperatureWarning"),
        ("RaiseError", "generic/VendorWarning", "OcmfSignature"),
        ("ClearError", "generic/VendorWarning", "TemperatureWarning"),
        ("RaiseError", "generic/VendorWarning", "TemperatureWarning"),
    ]
    assert sent[0][1]["data"]["uuid"] != sent[3][1]["data"]["uuid"]


def test_refusals() -> None:
    reporter, sent, _ = make()
    with pytest.raises(ValueError, match="declares no error"):
        reporter.raise_error("PowerFailure", "", "x")
    with pytest.raises(ValueError, match="severity"):
        reporter.raise_error("VendorError", "", "x", severity="Critical")
    with pytest.raises(ValueError, match="namespace"):
        make("evse")
    assert sent == []


def test_namespace_switch_only_while_nothing_is_active() -> None:
    reporter, sent, _ = make()
    reporter.set_namespace("generic")
    reporter.raise_error("VendorError", "", "x")
    with pytest.raises(RuntimeError, match="while errors are active"):
        reporter.set_namespace("powermeter")
    reporter.clear_error("VendorError", "")
    reporter.set_namespace("powermeter")
    assert [m["data"]["type"] for _, m in sent] == ["generic/VendorError", "generic/VendorError"]
