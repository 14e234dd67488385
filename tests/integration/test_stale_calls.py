"""Calls the broker kept for the module's session: run after a short cut; a stale start refused.

EverestAdapter against a real mosquitto behind a TCP relay that can cut the link, and a
fake EvseManager (no MQTT 5 expiry: the EVerest envelope has none).
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from lem_dcbm.everest.adapter import EverestAdapter
from lem_dcbm.harness import Broker, wait_until
from tests.integration.test_everest_bus import FAST, TRANSACTION, DummyHandlers, broker_of
from tests.support.everest_peer import EverestPeer
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

MODULE_ID = "powermeter_1"


def _error_type(result: dict[str, object]) -> object:
    error = result.get("error")
    return error.get("__everest__error_type") if isinstance(error, dict) else None


def _call_across_a_cut(
    mosquitto: Broker,
    handlers: DummyHandlers,
    stale_call_s: float,
    cut_s: float,
    command: str = "start_transaction",
) -> dict[str, object]:
    """Cut the module's link, call ``command``, restore after ``cut_s``; the result."""
    with (
        TcpProxy(mosquitto.host, mosquitto.port) as link,
        EverestPeer(mosquitto.host, mosquitto.port, module_id=MODULE_ID) as peer,
    ):
        adapter = EverestAdapter(
            replace(broker_of(mosquitto), port=link.port),
            MODULE_ID,
            handlers,
            backoff=FAST,
            stale_call_s=stale_call_s,
        )
        adapter.connect(5)
        try:
            link.cut()
            wait_until(lambda: not adapter.connected, 5, what="the adapter to notice the cut")
            cut_at = time.monotonic()
            args = (
                {"value": TRANSACTION}
                if command == "start_transaction"
                else {"transaction_id": "kept-stop"}
            )
            call_id = peer.call_async(command, args)
            # The length of the cut is the scenario itself, not a wait for something.
            time.sleep(max(0.0, cut_at + cut_s - time.monotonic()))
            link.restore()
            result = peer.result(call_id, timeout=15)
            # A call made now, after the backlog, runs as usual.
            live = peer.call("stop_transaction", {"transaction_id": "live"}, timeout=10)
            assert live.get("retval", {}).get("status") == "OK", live  # type: ignore[union-attr]
            return result
        finally:
            adapter.close(1.0)


def test_a_call_kept_longer_than_the_limit_is_refused_not_run(mosquitto: Broker) -> None:
    handlers = DummyHandlers()
    result = _call_across_a_cut(mosquitto, handlers, stale_call_s=1.0, cut_s=2.0)
    assert _error_type(result) == "CmdTimeout", result
    assert "the broker kept this call for up to" in str(result)
    assert [name for name, _ in handlers.calls] == ["stop"]  # never the late start


def test_a_call_kept_for_a_short_cut_is_still_answered(mosquitto: Broker) -> None:
    handlers = DummyHandlers()
    result = _call_across_a_cut(mosquitto, handlers, stale_call_s=30.0, cut_s=0.5)
    assert result.get("retval", {}).get("status") == "OK", result  # type: ignore[union-attr]
    assert [name for name, _ in handlers.calls] == ["start", "stop"]


def test_a_stop_kept_longer_than_the_limit_is_still_carried_out(mosquitto: Broker) -> None:
    """A late stop ends only what it names, and its record is kept: it never expires."""
    handlers = DummyHandlers()
    result = _call_across_a_cut(
        mosquitto, handlers, stale_call_s=1.0, cut_s=2.0, command="stop_transaction"
    )
    assert result.get("retval", {}).get("status") == "OK", result  # type: ignore[union-attr]
    assert [name for name, _ in handlers.calls] == ["stop", "stop"]
