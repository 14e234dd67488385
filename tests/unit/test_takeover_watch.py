"""Recognising a fight over the module's MQTT client id, with time under test control."""

from __future__ import annotations

from lem_dcbm.everest.presence import TakeoverWatch, takeover_message


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_three_losses_within_a_minute_while_the_broker_is_fine_are_a_fight_told_once() -> None:
    clock = Clock()
    watch = TakeoverWatch(clock)
    seen: list[bool] = []
    for _ in range(5):
        seen.append(watch.lost(other_link_up=True))
        clock.now += 10
    assert seen == [False, False, True, False, False]


def test_losses_far_apart_are_no_fight() -> None:
    clock = Clock()
    watch = TakeoverWatch(clock)
    for _ in range(5):
        assert not watch.lost(other_link_up=True)
        clock.now += 31  # never three within 60 s


def test_losses_while_the_broker_is_away_are_no_fight() -> None:
    clock = Clock()
    watch = TakeoverWatch(clock)
    assert not watch.lost(other_link_up=True)
    assert not watch.lost(other_link_up=True)
    assert not watch.lost(other_link_up=False)  # the broker restarted: start counting again
    assert not watch.lost(other_link_up=True)
    assert not watch.lost(other_link_up=True)
    assert watch.lost(other_link_up=True)


def test_the_line_names_module_id_and_client_id() -> None:
    line = takeover_message("powermeter_1", "lemdcbm-0123456789abcde")
    assert "module id powermeter_1" in line
    assert "same MQTT client id lemdcbm-0123456789abcde" in line
