"""A meter claim's topic and what a claim of any shape says (no broker needed)."""

from __future__ import annotations

import pytest

from lem_dcbm.config import BrokerSettings
from lem_dcbm.everest.meter_claim import MeterClaim, describe_claim


def test_claim_topic_keeps_its_shape_whatever_the_ids() -> None:
    claim = MeterClaim(BrokerSettings(prefix="everest"), "pm/+#", address="http://x:80")
    assert claim.topic("120/24+#", "pm/+#") == (
        "everest/lem_dcbm/meters/120%2F24%2B%23/pm%2F%2B%23"
    )


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (
            b'{"address": "http://10.0.0.5:80", "pid": 7, "host": "c1"}',
            "address http://10.0.0.5:80, pid 7, host c1",
        ),
        (b"[" * 1000, "a claim that is not JSON"),
        (b"x" * 2000, "a claim of 2000 bytes, not read"),
        (b"[1, 2]", "a claim that is not a JSON object"),
        (b'{"pid": true, "host": {"a": 1}}', "pid ?, host ?"),
        (b'{"address": "' + b"a" * 200 + b'"}', "address " + "a" * 61 + "..."),
        (b"{}", "a claim that says nothing more"),
    ],
)
def test_any_claim_is_described_in_one_short_phrase(payload: bytes, said: str) -> None:
    assert describe_claim(payload) == said


def test_foreign_transaction_without_outputs_is_quiet() -> None:
    claim = MeterClaim(BrokerSettings(), "pm", address="http://x:80")
    claim.foreign_transaction("the meter runs transaction A")
    claim.foreign_transaction(None)
    assert claim.others() == ()
