"""Keep values a peer sent out of the log lines that pynetdicom and pydicom print.

The libraries quote what they could not accept: pynetdicom's "Invalid 'Affected SOP Instance
UID' value '...'" and "Non-conformant ... value '...'" (pynetdicom.utils.set_uid), the
exception it then logs with its traceback ("Received an invalid DIMSE message",
pynetdicom.dimse), the C-STORE/C-ECHO request summaries at INFO/DEBUG (pynetdicom._handlers:
"Affected SOP Instance UID : ..."); pydicom warns with a Specific Character Set value it does
not know. A sender can put anything into those fields, a patient's name included, and the
node's rule is that its log holds UIDs, AE titles and job ids only.

`ValueRedactingFilter` rewrites such records before any handler formats them:
- quoted text becomes '<withheld>' unless it is the keyword or name of a DICOM element (the
  libraries quote the attribute they complain about as well as its value);
- in a request summary line ("Label   : value", the label padded) the value is withheld;
- an exception logged as the message keeps only its type; a traceback keeps its frames (file,
  line, code) and the exception's type, not its message.
"""

from __future__ import annotations

import functools
import logging
import re
import traceback

from pydicom.datadict import DicomDictionary

# Loggers whose records are rewritten: pynetdicom.*, pydicom, and Python warnings (pydicom
# also warns through the warnings module, which logging.captureWarnings routes to py.warnings).
REDACTED_LOGGERS = ("pynetdicom", "pydicom", "py.warnings")
WITHHELD = "<withheld>"
QUOTED = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
# pynetdicom's request summaries pad the label: "Affected SOP Instance UID     : 1.2.3"
SUMMARY_LINE = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9 ()/'._-]*?[ \t]+:)[ \t]*\S.*$", re.MULTILINE)


@functools.cache
def _dicom_names() -> frozenset[str]:
    """Keywords and names of every element in pydicom's dictionary (command elements too)."""
    names = set()
    for entry in DicomDictionary.values():
        names.add(entry[2])  # name, e.g. "Affected SOP Instance UID"
        names.add(entry[4])  # keyword, e.g. "AffectedSOPInstanceUID"
    names.discard("")
    return frozenset(names)


def _quoted(match: re.Match[str]) -> str:
    text = match.group(1) if match.group(1) is not None else match.group(2)
    quote = match.group(0)[0]
    return match.group(0) if text in _dicom_names() else f"{quote}{WITHHELD}{quote}"


def redact_text(text: str) -> str:
    """`text` with quoted values and the values of summary lines withheld."""
    text = QUOTED.sub(_quoted, text)
    return SUMMARY_LINE.sub(lambda m: f"{m.group(1)} {WITHHELD}", text)


def traceback_without_values(error: BaseException) -> str:
    """Where an exception happened (files, lines, code) and its type, not its message."""
    frames = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
    return f"Traceback (most recent call last), message withheld:\n{frames}{type(error).__name__}"


class ValueRedactingFilter(logging.Filter):
    """Rewrites records of REDACTED_LOGGERS as the module docstring says; passes all records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(REDACTED_LOGGERS):
            return True
        if isinstance(record.msg, BaseException):
            message = f"{type(record.msg).__name__} (message withheld)"
        else:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record still gets logged, without args
                message = str(record.msg)
            message = redact_text(message)
        record.msg, record.args = message, ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = traceback_without_values(record.exc_info[1])
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install(handlers: list[logging.Handler]) -> None:
    """Add the filter to each handler (once), so it sees the records of every logger."""
    for handler in handlers:
        if not any(isinstance(f, ValueRedactingFilter) for f in handler.filters):
            handler.addFilter(ValueRedactingFilter())
