"""The sender's C-STORE status policy: which statuses count as sent, worth a retry, or final."""

from __future__ import annotations

import pytest

from node.send import Outcome, classify_status


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.SENT),
        (0xB000, Outcome.SENT),  # coercion of data elements: stored
        (0x0111, Outcome.SENT),  # duplicate SOP instance: the destination has it
        (0xA700, Outcome.TRANSIENT),  # out of resources
        (0xA7FF, Outcome.TRANSIENT),
        (0x0213, Outcome.TRANSIENT),  # resource limitation
        (0x0110, Outcome.TRANSIENT),  # processing failure
        (0xA900, Outcome.PERMANENT),  # data set does not match SOP class
        (0xC000, Outcome.PERMANENT),  # cannot understand
        (0xC211, Outcome.PERMANENT),
        (0x0122, Outcome.PERMANENT),  # SOP class not supported
        (0x0124, Outcome.PERMANENT),  # not authorised
    ],
)
def test_c_store_status_policy(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome
