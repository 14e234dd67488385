"""Topic names, client ids and reconnect delays."""

from __future__ import annotations

import pytest

from lem_dcbm.config import normalize_prefix
from lem_dcbm.everest.bus import MAX_CLIENT_ID, stable_client_id
from lem_dcbm.everest.topics import Topics
from lem_dcbm.retry import RetryPolicy


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("everest", "everest/"),
        ("everest/", "everest/"),
        ("a/b//", "a/b/"),
        (None, "everest/"),
        ("", "everest/"),
    ],
)
def test_prefix_always_ends_with_one_slash(given: str | None, expected: str) -> None:
    assert normalize_prefix(given) == expected


def test_topic_names() -> None:
    topics = Topics("everest", "powermeter_1")
    assert topics.var("powermeter") == "everest/modules/powermeter_1/impl/main/var/powermeter"
    assert (
        topics.cmd("start_transaction")
        == "everest/modules/powermeter_1/impl/main/cmd/start_transaction"
    )
    assert (
        topics.cmd_response("stop_transaction", "evse_manager")
        == "everest/modules/powermeter_1/impl/main/cmd/stop_transaction/response/evse_manager"
    )
    assert (
        topics.error("powermeter/CommunicationFault")
        == "everest/modules/powermeter_1/impl/main/error/powermeter/CommunicationFault"
    )
    assert topics.config_request == "everest/config/request"
    assert topics.config_response == "everest/modules/powermeter_1/response"
    assert topics.metadata == "everest/modules/powermeter_1/metadata"
    assert topics.module_ready == "everest/modules/powermeter_1/ready"
    assert topics.global_ready == "everest/ready"
    assert topics.shutdown == "everest/shutdown"
    assert topics.settings == "everest/settings"


def test_command_name_of_a_topic() -> None:
    topics = Topics("everest/", "pm", "main")
    assert (
        topics.command_name("everest/modules/pm/impl/main/cmd/stop_transaction")
        == "stop_transaction"
    )
    assert (
        topics.command_name("everest/modules/pm/impl/main/cmd/stop_transaction/response/x") is None
    )
    assert topics.command_name("everest/modules/other/impl/main/cmd/stop_transaction") is None
    assert topics.command_name("everest/modules/pm/impl/main/cmd/") is None


def test_client_id_is_stable_short_and_distinct() -> None:
    first = stable_client_id("everest/", "powermeter_1")
    assert first == stable_client_id("everest/", "powermeter_1")
    assert len(first) <= MAX_CLIENT_ID
    assert first != stable_client_id("everest/", "powermeter_2")
    assert first != stable_client_id("other/", "powermeter_1")


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    backoff = RetryPolicy(attempts=None, first_delay_s=0.5, max_delay_s=8.0, jitter=0.25)
    middle = [backoff.delay(attempt, rand=lambda: 0.5) for attempt in range(7)]
    assert middle == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.delay(0, rand=lambda: 0.0) == pytest.approx(0.375)
    assert backoff.delay(0, rand=lambda: 1.0) == pytest.approx(0.625)
    assert backoff.delay(10, rand=lambda: 1.0) == 8.0
    assert backoff.delay(10_000, rand=lambda: 0.0) == pytest.approx(6.0)
    assert len({backoff.delay(1) for _ in range(20)}) > 1
