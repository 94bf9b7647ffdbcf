"""The read-only status page: recent series and jobs, one job with its log, and its overlay.

The data comes from node.admin, the functions `ctnode series`, `jobs` and `jobs show` print
from, so the page and the CLI show the same thing: UIDs, AE titles, times and results, never
patient names or IDs. Every value is HTML-escaped here, before it enters a template.
"""

from __future__ import annotations

import tempfile
from html import escape
from pathlib import Path

from sqlalchemy.orm import Session

from node import admin
from node.http.templates import OVERLAY, PAGE, TABLE

RECENT_JOBS = 50
RECENT_SERIES = 50
INDEX_REFRESH_S = 10
OVERLAY_KIND = "capture"  # the Secondary Capture's result kind (node/pipelines/calcium.py)


def _when(iso: str | None, with_date: bool = True) -> str:
    if not iso:
        return ""
    return iso[:19].replace("T", " ") if with_date else iso[11:19]


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def td(value: object, css: str = "") -> str:
    text = "" if value is None else str(value)
    attribute = f' class="{escape(css)}"' if css else ""
    return f"<td{attribute}>{escape(text)}</td>"


def state_td(state: str | None) -> str:
    return td(state or "", f"state-{state}" if state else "")


def link_td(href: str, text: str) -> str:
    return f'<td><a href="{escape(href)}">{escape(text)}</a></td>'


def table(table_id: str, caption: str, header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return f'<h2>{escape(caption)}</h2>\n<p id="{escape(table_id)}">none</p>\n'
    return TABLE.substitute(
        table_id=escape(table_id),
        caption=escape(caption),
        header="".join(f"<th>{escape(name)}</th>" for name in header),
        rows="\n".join(f"<tr>{''.join(cells)}</tr>" for cells in rows),
    )


def page(title: str, body: str, refresh_s: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">\n' if refresh_s else ""
    return PAGE.substitute(title=escape(title), body=body, refresh=refresh)


def index_page(session: Session) -> str:
    """Queues, recent jobs and recent series."""
    status = admin.status(session)
    queue_rows = [
        [td(what), td(", ".join(f"{k} {v}" for k, v in status[what].items() if v) or "none")]
        for what in ("series", "jobs", "deliveries")
    ]
    if status["oldest_queued_job_at"]:
        queue_rows.append([td("oldest queued job"), td(_when(status["oldest_queued_job_at"]))])
    jobs = admin.list_jobs(session, limit=RECENT_JOBS)
    job_rows = [
        [
            link_td(f"/jobs/{job['id']}", f"#{job['id']}"),
            td(job["pipeline"]),
            state_td(job["state"]),
            td(job["series_uid"], "uid"),
            td(job["sender_ae"]),
            td(job["instances"], "num"),
            td(_when(job["created_at"]), "when"),
            td(_seconds(job["seconds"]), "num"),
            td(job["error"] or ""),
        ]
        for job in jobs
    ]
    series = admin.series_rows(session, RECENT_SERIES)
    series_rows = [
        [
            td(row["id"], "num"),
            td(row["series_uid"], "uid"),
            td(row["modality"] or ""),
            td(row["instances"], "num"),
            td(row["sender_ae"]),
            td(_when(row["first_received_at"]), "when"),
            td(_when(row["last_received_at"]), "when"),
            state_td(row["state"]),
        ]
        for row in series
    ]
    body = (
        table("queues", "Queues", ["what", "by state"], queue_rows)
        + table(
            "jobs",
            f"Recent jobs (most recent {RECENT_JOBS})",
            [
                "job",
                "pipeline",
                "state",
                "series UID",
                "sender",
                "inst",
                "created",
                "time",
                "error",
            ],
            job_rows,
        )
        + table(
            "series",
            f"Received series (most recent {RECENT_SERIES})",
            ["id", "series UID", "mod", "inst", "sender", "first", "last", "state"],
            series_rows,
        )
    )
    return page("ctnode status", body, refresh_s=INDEX_REFRESH_S)


def job_page(session: Session, job_id: int) -> str | None:
    """What `ctnode jobs show ID` prints, and the overlay when the job made one; None: no
    such job."""
    job = admin.show_job(session, job_id)
    if job is None:
        return None
    series = job["series"]
    summary = [
        [td("state"), state_td(job["state"])],
        [td("error"), td(job["error"] or "")],
        [td("series"), td(f"{series['series_uid']} ({series['modality'] or '?'})", "uid")],
        [td("study"), td(series["study_uid"], "uid")],
        [
            td("received"),
            td(
                f"{series['instances']} instances from {series['sender_ae']}, "
                f"{_when(series['first_received_at'])} - "
                f"{_when(series['last_received_at'], False)}"
            ),
        ],
        [td("attempts"), td(job["attempts"])],
    ]
    if job["superseded_by"]:
        summary.append(
            [
                td("superseded by"),
                link_td(f"/jobs/{job['superseded_by']}", f"#{job['superseded_by']}"),
            ]
        )
    stages = [
        [
            state_td(stage["state"]),
            td(_when(stage["at"], False)),
            td(_seconds(stage["seconds"]) + (" (so far)" if stage["ongoing"] else ""), "num"),
        ]
        for stage in job["stages"]
    ]
    log = [
        [td(_when(event["at"], False)), td(event["kind"]), td(event["message"])]
        for event in job["events"]
    ]
    outputs = [
        [td(o["kind"]), td(o["sop_instance_uid"], "uid"), td(o["size_bytes"], "num")]
        for o in job["outputs"]
    ]
    deliveries = [
        [
            td(d["id"], "num"),
            td(d["destination"]),
            state_td(d["state"]),
            td(d["attempts"], "num"),
            td(_when(d["sent_at"] or d["next_attempt_at"]), "when"),
            td(d["last_error"] or ""),
        ]
        for d in job["deliveries"]
    ]
    body = (
        table("summary", "Job", ["what", "value"], summary)
        + table("stages", "Time in each state", ["state", "from", "time"], stages)
        + table("log", "Job log", ["time", "event", "message"], log)
        + table("outputs", "Outputs", ["kind", "SOP instance UID", "bytes"], outputs)
        + table(
            "deliveries",
            "Deliveries",
            ["id", "destination", "state", "tries", "sent / next try", "last error"],
            deliveries,
        )
    )
    if any(o["kind"] == OVERLAY_KIND for o in job["outputs"]):
        body += OVERLAY.substitute(src=f"/jobs/{job_id}/overlay.png", job_id=job_id)
    return page(f"Job #{job_id} ({job['pipeline']})", body)


def overlay_png(session: Session, outbox_dir: Path, job_id: int) -> bytes | None:
    """The job's Secondary Capture overlay as PNG; None when the job has none (or its file
    left the outbox)."""
    import pydicom

    from node.results.capture import save_png

    job = admin.show_job(session, job_id)
    if job is None:
        return None
    output = next((o for o in job["outputs"] if o["kind"] == OVERLAY_KIND), None)
    if output is None:
        return None
    path = Path(outbox_dir) / output["path"]
    if not path.is_file():
        return None
    dataset = pydicom.dcmread(path)
    # save_png writes a file (the demo's overlay.png): rendered into a private temporary
    # folder and read back, so the page shows exactly what the CLI writes.
    with tempfile.TemporaryDirectory(prefix="ctnode-overlay-") as folder:
        return save_png(dataset, Path(folder) / "overlay.png").read_bytes()
