"""JSON lines for the log ([logging] format = "json"): one object per record, for journald,
container runtimes and log shippers that index fields instead of parsing text.

Each line holds time (UTC, ISO 8601), level, logger, message and thread, plus the structured
fields of the record: those a call passes with `extra={"job_id": ...}` (any key in
STRUCTURED_FIELDS), and those the node's existing messages name in their first words by
convention ("job %d ...", "series %s ...", "instance %s ..."), taken from the call's arguments,
not parsed from the text. The message is the same text the "text" format prints, so the JSON
log holds no more than it: UIDs, AE titles and job ids, never patient names or IDs.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# Field names a call may pass with `extra=`; anything else a record carries stays out of the
# line (a library's private attributes would otherwise leak into it).
STRUCTURED_FIELDS = (
    "job_id",
    "series_uid",
    "study_uid",
    "sop_instance_uid",
    "calling_ae",
    "destination",
    "delivery_id",
    "pipeline",
    "stage",
)

# The node's messages start with the object they concern ("job %d failed: %s"); the first
# argument of such a call is that object's id. Matched on the format string, not the output.
FIELD_OF_MESSAGE_PREFIX = {
    "job %d": "job_id",
    "series %s": "series_uid",
    "instance %s": "sop_instance_uid",
    "instance from %s": "calling_ae",
    "association from %s": "calling_ae",
    "association from %r": "calling_ae",
    "delivery %d": "delivery_id",
    "routing series id %d": "series_id",
    "heartbeat of job %d": "job_id",
}


def structured_fields(record: logging.LogRecord) -> dict[str, object]:
    found: dict[str, object] = {}
    if isinstance(record.msg, str) and isinstance(record.args, tuple) and record.args:
        for prefix, name in FIELD_OF_MESSAGE_PREFIX.items():
            if record.msg.startswith(prefix):
                found[name] = record.args[0]
                break
    for name in STRUCTURED_FIELDS:
        if name in record.__dict__:
            found[name] = record.__dict__[name]
    return found


class JsonLineFormatter(logging.Formatter):
    """A record as one line of JSON (no newline inside: a traceback is one escaped string)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
            **structured_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
