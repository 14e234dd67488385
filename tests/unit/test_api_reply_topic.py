"""The reply goes where EVerest's powermeter_API bridge listens, prefix or not."""

from __future__ import annotations

import pytest

from lem_dcbm.everest_api.topics import ApiTopics, reply_topic

BARE = "everest_api/1/powermeter/pm_api/m2e/reply/0b7c"


@pytest.mark.parametrize(
    ("reply_to", "prefix", "expected"),
    [
        # The bridge's replyTo lacks the prefix it subscribes under (EVerest's request helper).
        (BARE, "site-7/", f"site-7/{BARE}"),
        (BARE, "site-7", f"site-7/{BARE}"),
        # A replyTo already under the prefix (this project's tools, a fixed bridge) stays.
        (f"site-7/{BARE}", "site-7/", f"site-7/{BARE}"),
        # No prefix: the literal topic.
        (BARE, "", BARE),
        # A topic outside the API's own (allowed by name in api_reply_topics) stays literal.
        ("site/replies/1", "site-7/", "site/replies/1"),
    ],
)
def test_reply_topic(reply_to: str, prefix: str, expected: str) -> None:
    assert reply_topic(reply_to, prefix) == expected


def test_the_prefixed_reply_is_the_topic_the_bridge_listens_on() -> None:
    # The framework subscribes to f"{prefix}{replyTo}"; ApiTopics builds the same topics.
    topics = ApiTopics("pm_api", "site-7/")
    assert reply_topic(BARE, "site-7/") == topics.reply("0b7c")
