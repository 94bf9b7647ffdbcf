"""C-STORE response statuses, both directions: what the node answers as SCP (node.receive) and
what a status from a destination means for the sender's retry policy (node.send).

Names follow PS3.4 B.2.3 (the Storage Service Class: Refused A7xx, Error A9xx and Cxxx,
Warning B000/B006/B007) and PS3.7 Annex C (the general statuses of any DIMSE service).
"""

from __future__ import annotations

from enum import Enum

# --- answered by the node (SCP, PS3.4 B.2.3) ----------------------------------------------------

SUCCESS = 0x0000
REFUSED_OUT_OF_RESOURCES = 0xA700  # disk full, disk or database error: the sender retries later
# An instance over [storage] max_instance_mb. PS3.4 B.2.3 offers Refused: Out of Resources
# (A7xx), Error: Data Set does not match SOP Class (A9xx) and Error: Cannot understand (Cxxx).
# The data is not at fault, and was not even read, so A9xx and Cxxx would misinform; the node
# refuses for want of a resource its operator sized, and a resend succeeds once the limit is
# raised: Refused, Out of Resources. A7xx's low byte is free to implementations; 0xA701 lets a
# sender's log tell this refusal from a full disk (0xA700), and senders that know only the
# A7xx class treat both the same.
REFUSED_OUT_OF_RESOURCES_INSTANCE_TOO_LARGE = 0xA701
# Pixel data whose size or frame count contradicts the Image Pixel module: the dataset breaks
# a rule of its IOD (PS3.3 C.7.6.3), so it does not match its SOP class.
ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
# A required UID missing or invalid, encapsulated pixel data whose items cannot be followed,
# or a Specific Character Set that is not a defined term: the node cannot interpret it.
ERROR_CANNOT_UNDERSTAND = 0xC000
ERROR_CANNOT_UNDERSTAND_UNDECODABLE = 0xC210  # the dataset could not be parsed
ERROR_CANNOT_UNDERSTAND_UNEXPECTED = 0xC211  # a fault in the node (pynetdicom's code for it)

# --- received from a destination (SCU) ----------------------------------------------------------

# Stored: success, the warnings (the destination kept the object, perhaps altered) and
# 0x0111, the destination already has this SOP instance (e.g. from an earlier try). 0x0001,
# 0x0107, 0x0116, 0x0111 are general statuses of PS3.7 Annex C; Bxxx those of PS3.4 B.2.3.
WARNING_OPTIONAL_ATTRIBUTES_NOT_SUPPORTED = 0x0001
WARNING_ATTRIBUTE_LIST_ERROR = 0x0107
WARNING_ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
FAILURE_DUPLICATE_SOP_INSTANCE = 0x0111
# Transient failures among PS3.7 Annex C's general statuses (besides the A7xx class): a
# retry can succeed.
FAILURE_PROCESSING_FAILURE = 0x0110
FAILURE_RESOURCE_LIMITATION = 0x0213
# Permanent failures among PS3.7 Annex C's general statuses (besides the A9xx and Cxxx
# classes): sending the same object again gets the same answer.
FAILURE_INVALID_OBJECT_INSTANCE = 0x0117
FAILURE_SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused
FAILURE_NOT_AUTHORIZED = 0x0124  # Refused
FAILURE_UNRECOGNIZED_OPERATION = 0x0211
FAILURE_MISTYPED_ARGUMENT = 0x0212

STORED_STATUSES = frozenset(
    {
        SUCCESS,
        WARNING_OPTIONAL_ATTRIBUTES_NOT_SUPPORTED,
        WARNING_ATTRIBUTE_LIST_ERROR,
        FAILURE_DUPLICATE_SOP_INSTANCE,
        WARNING_ATTRIBUTE_VALUE_OUT_OF_RANGE,
        WARNING_COERCION_OF_DATA_ELEMENTS,
        WARNING_ELEMENTS_DISCARDED,
        WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS,
    }
)
TRANSIENT_STATUSES = frozenset({FAILURE_PROCESSING_FAILURE, FAILURE_RESOURCE_LIMITATION})
PERMANENT_STATUSES = frozenset(
    {
        FAILURE_INVALID_OBJECT_INSTANCE,
        FAILURE_SOP_CLASS_NOT_SUPPORTED,
        FAILURE_NOT_AUTHORIZED,
        FAILURE_UNRECOGNIZED_OPERATION,
        FAILURE_MISTYPED_ARGUMENT,
    }
)
REFUSED_OUT_OF_RESOURCES_CLASS = 0xA700  # A7xx (status & 0xFF00)
ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS_CLASS = 0xA900  # A9xx (status & 0xFF00)
ERROR_CANNOT_UNDERSTAND_CLASS = 0xC000  # Cxxx (status & 0xF000)

# A-ASSOCIATE-RJ result (PS3.8 9.3.4): 0x01 rejected-permanent; 0x02 is rejected-transient.
REJECTED_PERMANENT = 0x01


class Outcome(Enum):
    """What a try of a delivery came to, for the retry policy."""

    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify_status(status: int) -> Outcome:
    """What a C-STORE response status from a destination means for the retry policy: stored,
    worth another try, or not (see node.send's module docstring); an unknown failure is
    retried, within [send] max_attempts."""
    if status in STORED_STATUSES:
        return Outcome.SENT
    if status in TRANSIENT_STATUSES or status & 0xFF00 == REFUSED_OUT_OF_RESOURCES_CLASS:
        return Outcome.TRANSIENT
    if (
        status in PERMANENT_STATUSES
        or status & 0xFF00 == ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS_CLASS
        or status & 0xF000 == ERROR_CANNOT_UNDERSTAND_CLASS
    ):
        return Outcome.PERMANENT
    return Outcome.TRANSIENT
