"""node.logformat: a record is one line of JSON with its structured fields, and nothing a
library hangs on the record besides the documented ones."""

from __future__ import annotations

import json
import logging
import sys

from node.logformat import JsonLineFormatter


def record(msg: str, *args: object, exc_info=None, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("ctnode.worker", logging.WARNING, __file__, 1, msg, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_fields_from_the_message_prefix_and_from_extra():
    line = JsonLineFormatter().format(record("job %d failed: %s", 42, "bad series"))
    entry = json.loads(line)
    assert entry["message"] == "job 42 failed: bad series"
    assert entry["job_id"] == 42 and entry["level"] == "WARNING"
    assert entry["logger"] == "ctnode.worker" and entry["time"].endswith("+00:00")
    entry = json.loads(
        JsonLineFormatter().format(
            record("results sent", series_uid="1.2.3", private_thing="not logged")
        )
    )
    assert entry["series_uid"] == "1.2.3" and "private_thing" not in entry
    entry = json.loads(JsonLineFormatter().format(record("series %s routed", "1.2.840.1")))
    assert entry["series_uid"] == "1.2.840.1"


def test_a_traceback_stays_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        line = JsonLineFormatter().format(record("job %d: unexpected", 7, exc_info=sys.exc_info()))
    assert "\n" not in line
    entry = json.loads(line)
    assert "ValueError: boom" in entry["exception"] and entry["job_id"] == 7
