"""node.dicom_status: the sender's C-STORE status policy (which statuses count as sent, worth a
retry, or final); the statuses the node answers (SCP) mean to a sender what the node intends,
judged by that policy; and the policy's sets do not overlap."""

from __future__ import annotations

import pytest

from node import dicom_status as status
from node.dicom_status import Outcome, classify_status


@pytest.mark.parametrize(
    ("answered", "meant"),
    [
        (status.SUCCESS, Outcome.SENT),
        # A full disk, a database error, an instance over the size cap: resend later.
        (status.REFUSED_OUT_OF_RESOURCES, Outcome.TRANSIENT),
        (status.REFUSED_OUT_OF_RESOURCES_INSTANCE_TOO_LARGE, Outcome.TRANSIENT),
        # The data itself is at fault: the same object gets the same answer.
        (status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS, Outcome.PERMANENT),
        (status.ERROR_CANNOT_UNDERSTAND, Outcome.PERMANENT),
        (status.ERROR_CANNOT_UNDERSTAND_UNDECODABLE, Outcome.PERMANENT),
        (status.ERROR_CANNOT_UNDERSTAND_UNEXPECTED, Outcome.PERMANENT),
    ],
)
def test_what_the_node_answers_means_what_it_intends(answered: int, meant: Outcome) -> None:
    assert classify_status(answered) is meant


def test_the_policy_sets_are_disjoint_and_classified_as_named() -> None:
    sets = {
        Outcome.SENT: status.STORED_STATUSES,
        Outcome.TRANSIENT: status.TRANSIENT_STATUSES,
        Outcome.PERMANENT: status.PERMANENT_STATUSES,
    }
    assert not (status.STORED_STATUSES & status.TRANSIENT_STATUSES)
    assert not (status.STORED_STATUSES & status.PERMANENT_STATUSES)
    assert not (status.TRANSIENT_STATUSES & status.PERMANENT_STATUSES)
    for outcome, codes in sets.items():
        assert {classify_status(code) for code in codes} == {outcome}


def test_an_unknown_failure_is_retried() -> None:
    assert classify_status(0x0105) is Outcome.TRANSIENT  # no such attribute: not in any set


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
def test_the_sender_policy_of_received_statuses(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome
