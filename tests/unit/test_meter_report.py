"""The reports of ``lem-dcbm meter`` from parsed meter answers, without a meter."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lem_dcbm.meter.models import parse_status
from lem_dcbm.tools.meter_report import clock_skew_s, render_status, status_report

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("meter_time", "skew"),
    [
        ("2026-11-22T10:00:00+00:00", 0.0),
        ("2026-11-22T11:00:00+01:00", 0.0),  # the meter shows local time with its offset
        ("2026-11-22T10:00:00Z", 0.0),
        ("2026-11-22T09:00:00+00:00", -3600.0),
        ("2025-11-22T10:00:00+00:00", -365 * 86400.0),
        ("2026-11-22T10:00:05.5+00:00", 5.5),
    ],
)
def test_clock_skew_is_meter_minus_local_whatever_the_offset(meter_time: str, skew: float) -> None:
    assert clock_skew_s(meter_time, NOW) == skew


@pytest.mark.parametrize("meter_time", ["", "yesterday", "2026-11-22T10:00:00"])
def test_clock_skew_is_unknown_without_a_readable_time_with_offset(meter_time: str) -> None:
    assert clock_skew_s(meter_time, NOW) is None


def test_bits_a_firmware_adds_are_shown_without_a_position_or_a_verdict() -> None:
    status = parse_status(
        {
            "status": {
                "value": 1,
                "bits": {"suLinkStatusIsOk": True, "timeSyncStatusIsOk": False, "newBit": True},
            },
            "version": {"applicationFirmwareVersion": "MU-9.0.0.0"},
            "meterId": "1",
            "publicKeyOcmf": "00",
            "time": "not a time",
        }
    )

    report = status_report(
        status, url="http://m:80", api_generation="v1", local_now=NOW, logbook_entries=None
    )

    assert [(row["bit"], row["name"], row["problem"]) for row in report["status"]["bits"]] == [
        (0, "suLinkStatusIsOk", False),
        (4, "timeSyncStatusIsOk", True),
        (None, "newBit", False),
    ]
    assert report["errors"] == {"value": 0, "bits": []}
    assert report["clock_skew_s"] is None
    assert report["stored_transactions"] is None
    text = render_status(report)
    assert "clock skew                -\n" in text
    assert "logbook entries           -\n" in text
    assert "   ? newBit                      yes  ok" in text
    assert "problems: 1\n  timeSyncStatusIsOk: the meter's time sync is not valid" in text
