"""The host clock's judge: the kernel's synchronisation state and the meter's valid clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from lem_dcbm.config import config_from_mapping
from lem_dcbm.core.host_clock_trust import (
    STA_UNSYNC,
    TIME_ERROR,
    HostClockCheck,
    KernelClock,
    kernel_clock_from,
    read_kernel_clock,
)
from lem_dcbm.errors import ConfigError
from lem_dcbm.meter.models import MeterStatus

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
SYNCED = KernelClock(True, 0.005, "adjtimex: state 0, maximum error 0.005 s")
UNSYNCED = KernelClock(False, 16.0, "adjtimex: TIME_ERROR, STA_UNSYNC, maximum error 16 s")
STA_PLL = 0x0001


def status(meter_time: datetime | str, *, sync_ok: bool = True) -> MeterStatus:
    text = meter_time if isinstance(meter_time, str) else meter_time.isoformat()
    return MeterStatus(
        value=0,
        bits={"timeSyncStatusIsOk": sync_ok},
        error_value=0,
        error_bits={},
        meter_id="1",
        public_key_ocmf="",
        public_key="",
        firmware_version="MU-2.3.0.1",
        time=text,
    )


def meter_at(meter_time: datetime | str, *, sync_ok: bool = True) -> Callable[[], MeterStatus]:
    return lambda: status(meter_time, sync_ok=sync_ok)


def never_asked() -> MeterStatus:
    raise AssertionError("the meter was asked although the kernel vouches for the clock")


def check(kernel: KernelClock, mode: str = "kernel-or-meter", skew: float = 60) -> HostClockCheck:
    return HostClockCheck(mode, skew, kernel=lambda: kernel)


def test_kernel_states_read_as_adjtimex_reports_them() -> None:
    unsynced = kernel_clock_from(TIME_ERROR, STA_UNSYNC, 16_000_000)
    assert not unsynced.synchronised
    assert unsynced.detail == "adjtimex: TIME_ERROR, STA_UNSYNC, maximum error 16 s"
    assert kernel_clock_from(0, STA_PLL, 1500) == KernelClock(
        True, 0.0015, "adjtimex: state 0, maximum error 0.0015 s"
    )
    # A client that cleared TIME_ERROR but left the status bit set is not believed.
    assert not kernel_clock_from(0, STA_UNSYNC, 1500).synchronised


def test_this_kernel_can_be_asked_without_privileges() -> None:
    state = read_kernel_clock()
    assert state.detail.startswith("adjtimex")
    assert state.max_error_s is None or state.max_error_s >= 0


def test_a_synchronised_kernel_is_believed_without_asking_the_meter() -> None:
    verdict = check(SYNCED).judge(lambda: NOW, never_asked)
    assert verdict.trusted
    assert "kernel clock is synchronised" in verdict.reason


def test_a_meter_clock_that_agrees_vouches_for_an_unsynchronised_host() -> None:
    verdict = check(UNSYNCED).judge(lambda: NOW, meter_at(NOW - timedelta(seconds=40)))
    assert verdict.trusted
    assert "agrees with the meter's valid clock (+40 s off" in verdict.reason


def test_a_host_three_days_ahead_of_the_meter_is_not_trusted() -> None:
    meter_time = (NOW - timedelta(days=3)).astimezone(timezone(timedelta(hours=1)))
    verdict = check(UNSYNCED).judge(lambda: NOW, meter_at(meter_time))
    assert not verdict.trusted
    assert verdict.meter_sync_valid is True
    assert verdict.reason == (
        "the kernel clock is not synchronised (adjtimex: TIME_ERROR, STA_UNSYNC, maximum "
        "error 16 s); the host clock is +259200 s off the meter's valid clock "
        "(2026-11-19T10:00:00Z), more than 60 s"
    )


def test_a_meter_without_valid_sync_is_no_evidence() -> None:
    verdict = check(UNSYNCED).judge(lambda: NOW, meter_at(NOW, sync_ok=False))
    assert not verdict.trusted
    assert verdict.meter_sync_valid is False
    assert "the meter's own time sync is not valid" in verdict.reason


def test_a_meter_time_that_cannot_be_read_is_no_evidence() -> None:
    verdict = check(UNSYNCED).judge(lambda: NOW, meter_at("yesterday"))
    assert not verdict.trusted
    assert "cannot be read" in verdict.reason


def test_the_kernel_error_bound_and_the_meter_only_mode() -> None:
    loose = KernelClock(True, 90.0, "adjtimex: state 0, maximum error 90 s")
    off = meter_at(NOW + timedelta(hours=1))
    assert not check(loose).judge(lambda: NOW, off).trusted
    assert check(loose, skew=120).judge(lambda: NOW, never_asked).trusted
    # ``meter``: a kernel that claims synchronisation is not enough.
    meter_only = check(SYNCED, mode="meter").judge(lambda: NOW, off)
    assert not meter_only.trusted
    assert "not consulted" in meter_only.reason


def test_always_trusts_without_asking_anyone() -> None:
    assert check(UNSYNCED, mode="always").judge(lambda: NOW, never_asked).trusted


def test_the_time_a_status_read_takes_is_no_disagreement() -> None:
    moments = iter([NOW, NOW + timedelta(seconds=20)])
    verdict = check(UNSYNCED, skew=5).judge(
        lambda: next(moments), meter_at(NOW + timedelta(seconds=10))
    )
    assert verdict.trusted


@pytest.mark.parametrize(
    ("mode", "skew", "named"), [("sometimes", 60.0, "trust"), ("meter", 0.0, "skew")]
)
def test_bad_settings_are_refused(mode: str, skew: float, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        HostClockCheck(mode, skew)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"host_clock_trust": "sometimes"}, "host_clock_trust"),
        ({"host_clock_max_skew_s": 0}, "host_clock_max_skew_s"),
        ({"host_clock_max_skew_s": 3601}, "host_clock_max_skew_s"),
    ],
)
def test_bad_config_values_name_their_key(override: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"ip_address": "10.0.0.5", **override})
    assert caught.value.key == key


def test_the_configured_values_reach_the_judge() -> None:
    config = config_from_mapping(
        {"ip_address": "10.0.0.5", "host_clock_trust": "meter", "host_clock_max_skew_s": 5}
    )
    judge = HostClockCheck(config.host_clock_trust, config.host_clock_max_skew_s)
    assert (judge.mode, judge.max_skew_s) == ("meter", 5)
    assert config_from_mapping({"ip_address": "10.0.0.5"}).host_clock_trust == "kernel-or-meter"
