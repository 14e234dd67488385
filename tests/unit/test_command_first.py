"""The lock that commands take ahead of background work."""

from __future__ import annotations

import threading

from lem_dcbm.core.command_first import CommandFirstLock
from lem_dcbm.harness.waiting import wait_until

WAIT_S = 10.0  # a bound on waiting for another thread, never a fixed sleep


def test_background_work_takes_the_lock_only_when_it_is_free() -> None:
    lock = CommandFirstLock()
    with lock.background() as taken:
        assert taken
    with lock:
        with lock.background() as taken:
            assert taken  # reentrant: the same thread's own step
        seen: list[bool] = []
        other = threading.Thread(target=lambda: seen.append(_try_background(lock)))
        other.start()
        other.join(WAIT_S)
        assert seen == [False]
    with lock.background() as taken:
        assert taken


def test_a_waiting_command_is_seen_and_background_work_gives_way() -> None:
    lock = CommandFirstLock()
    command_done = threading.Event()
    with lock.background() as taken:
        assert taken
        command = threading.Thread(target=lambda: _command(lock, command_done))
        command.start()
        wait_until(lambda: lock.commands_waiting == 1, WAIT_S, what="the command's wait")
        # A second background taker is refused while the command waits.
        seen: list[bool] = []
        other = threading.Thread(target=lambda: seen.append(_try_background(lock)))
        other.start()
        other.join(WAIT_S)
        assert seen == [False]
        assert not command_done.is_set()
    assert command_done.wait(WAIT_S)
    command.join(WAIT_S)
    assert lock.commands_waiting == 0


def test_commands_nest() -> None:
    lock = CommandFirstLock()
    with lock, lock:
        assert lock.commands_waiting == 0
    with lock.background() as taken:
        assert taken


def _command(lock: CommandFirstLock, done: threading.Event) -> None:
    with lock:
        done.set()


def _try_background(lock: CommandFirstLock) -> bool:
    with lock.background() as taken:
        return taken
