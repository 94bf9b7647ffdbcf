"""node.log_redaction on the records pynetdicom and pydicom make from a bad request (the
messages as pynetdicom 3 words them); the end-to-end check is in
tests/integration/test_receive_checks.py."""

from __future__ import annotations

import io
import logging

import pytest

from node.log_redaction import ValueRedactingFilter, install

MARKER = "MARKER^DOE"


@pytest.fixture
def stream() -> io.StringIO:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    install([handler])
    install([handler])  # idempotent
    assert sum(isinstance(f, ValueRedactingFilter) for f in handler.filters) == 1
    root = logging.getLogger()
    root.addHandler(handler)
    yield buffer
    root.removeHandler(handler)


def test_quoted_values_are_withheld_but_attribute_names_kept(stream: io.StringIO) -> None:
    logging.getLogger("pynetdicom.utils").error(
        f"Invalid 'Affected SOP Instance UID' value '1.2.{MARKER}' - must not contain ..."
    )
    logging.getLogger("pynetdicom.utils").warning(
        "Non-conformant 'Affected SOP Instance UID' value '1.2.0424242'"
    )
    text = stream.getvalue()
    assert MARKER not in text and "0424242" not in text
    assert text.count("'Affected SOP Instance UID' value '<withheld>'") == 2


def test_exceptions_keep_their_type_and_frames_only(stream: io.StringIO) -> None:
    def decode() -> None:
        raise ValueError(f"Invalid 'Affected SOP Instance UID' value '{MARKER}'")

    logger = logging.getLogger("pynetdicom.dimse")
    try:
        decode()
    except ValueError as error:
        logger.error("Received an invalid DIMSE message")
        logger.exception(error)  # pynetdicom logs the exception object as the message
    text = stream.getvalue()
    assert MARKER not in text
    assert "ValueError (message withheld)" in text
    assert "in decode" in text  # where it happened is still there


def test_request_summary_values_are_withheld(stream: io.StringIO) -> None:
    logger = logging.getLogger("pynetdicom._handlers")
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug(f"Affected SOP Instance UID     : 1.2.{MARKER}")
    finally:
        logger.setLevel(logging.NOTSET)
    assert MARKER not in stream.getvalue()
    assert "Affected SOP Instance UID     : <withheld>" in stream.getvalue()


def test_pydicom_warnings_and_other_loggers(stream: io.StringIO) -> None:
    logging.getLogger("pydicom").warning(f"Unknown encoding '{MARKER}' - using default")
    logging.getLogger("ctnode.receive").warning("job 'kept' as written")
    text = stream.getvalue()
    assert MARKER not in text
    assert "job 'kept' as written" in text  # the node's own lines are its own business
