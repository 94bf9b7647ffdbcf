"""Series completion and routing: which received series become which jobs.

A series is complete when no instance of it arrived for `complete_after_s` (per sender). It
is then routed: each [[routes]] rule tests the header of one of its instances (modality,
image type, slice thickness, description) and its instance count, and every rule it passes
makes one job of that rule's pipeline. A series that passes none is `ignored`, with every
rule's reason in its event. The node's own result objects and localizers never pass.

Re-sent and late instances: an instance already stored changes nothing (the receiver answers
success and records a duplicate), so the same series sent twice makes no second job. A new
instance after completion re-opens the series (node.db.add_instance); at its next completion
the new jobs supersede the series' earlier jobs of the same pipeline (`superseded_by` points
to the new job). A job superseded while it runs is not delivered (see node.worker).
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.config import RouteSettings, Settings
from node.db import (
    DeliveryState,
    Instance,
    Job,
    JobState,
    Result,
    Series,
    SeriesState,
    record_event,
    utcnow,
    write_session,
)
from node.events import EventKind

LOG = logging.getLogger("ctnode.series")
LOCALIZER = "LOCALIZER"


@dataclass(frozen=True)
class SeriesHeader:
    """The attributes routing looks at, from one instance of the series."""

    modality: str
    image_type: tuple[str, ...]
    slice_thickness_mm: float | None
    description: str
    manufacturer: str


def read_header(path: Path) -> SeriesHeader:
    """The routing attributes of one spooled instance (the pixel data is not read)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    try:
        thickness = float(ds.get("SliceThickness")) if ds.get("SliceThickness") else None
    except (TypeError, ValueError):
        thickness = None
    image_type = ds.get("ImageType") or []
    if isinstance(image_type, str):
        image_type = [image_type]
    return SeriesHeader(
        modality=str(ds.get("Modality", "")).strip(),
        image_type=tuple(str(v).strip().upper() for v in image_type),
        slice_thickness_mm=thickness,
        description=str(ds.get("SeriesDescription", "")),
        manufacturer=str(ds.get("Manufacturer", "")).strip(),
    )


def never_routed(header: SeriesHeader, own_result_series: bool) -> str | None:
    """Why no rule may take this series, whatever the rules say; None when one may."""
    # Imported here: node.results pulls in torch, which a receive-only node never needs.
    from node.results.equipment import MANUFACTURER

    if own_result_series or header.manufacturer.lower() == MANUFACTURER:
        return "the series is one of this node's own results"
    if LOCALIZER in header.image_type:
        return "the series is a localizer (Image Type LOCALIZER)"
    return None


def _glob_any(patterns: tuple[str, ...], text: str) -> str | None:
    lowered = text.lower()
    return next((p for p in patterns if fnmatch.fnmatchcase(lowered, p.lower())), None)


def route_refusal(rule: RouteSettings, header: SeriesHeader, instances: int) -> str | None:
    """Why `rule` does not take the series (a short reason without patient data), or None."""
    if header.modality not in rule.modalities:
        return f"modality {header.modality or '(none)'} is not one of {list(rule.modalities)}"
    missing = [value for value in rule.image_type if value not in header.image_type]
    if missing:
        return f"Image Type {'/'.join(header.image_type) or '(none)'} lacks {'/'.join(missing)}"
    thickness = header.slice_thickness_mm
    if thickness is None:
        return "no Slice Thickness"
    if not rule.min_slice_thickness_mm <= thickness <= rule.max_slice_thickness_mm:
        return (
            f"slice thickness {thickness:g} mm outside {rule.min_slice_thickness_mm:g}-"
            f"{rule.max_slice_thickness_mm:g} mm"
        )
    if instances < rule.min_instances:
        return f"{instances} instances, fewer than {rule.min_instances}"
    # Series descriptions are free text a site may fill with anything: the log names the
    # pattern that decided, never the description itself.
    if rule.description_include and _glob_any(rule.description_include, header.description) is None:
        return "Series Description matches none of description_include"
    excluded = _glob_any(rule.description_exclude, header.description)
    if excluded is not None:
        return f"Series Description matches description_exclude {excluded!r}"
    return None


def due_series(session: Session, settings: Settings, now: datetime) -> list[Series]:
    """Receiving series idle for at least their sender's completion timeout (locked rows on
    PostgreSQL, so two schedulers never complete the same series twice)."""
    receiving = session.scalars(
        select(Series)
        .where(Series.state == SeriesState.RECEIVING)
        .order_by(Series.last_received_at)
        .with_for_update(skip_locked=True)
    )
    return [
        series
        for series in receiving
        if series.last_received_at
        <= now - timedelta(seconds=settings.complete_after_s_for(series.sender_ae))
    ]


def complete_and_route(settings: Settings, sessions: sessionmaker[Session]) -> list[int]:
    """Complete every due series and route it; the ids of the jobs made (one transaction per
    series, so one unreadable header does not hold up the others)."""
    with sessions() as session:
        candidates = [s.id for s in due_series(session, settings, utcnow())]
    jobs: list[int] = []
    for series_id in candidates:
        try:
            with write_session(sessions) as session:
                jobs.extend(_complete_one(session, settings, series_id))
        except Exception:  # noqa: BLE001 - one bad series must not stop the scheduler
            LOG.exception("routing series id %d failed", series_id)
    return jobs


def _complete_one(session: Session, settings: Settings, series_id: int) -> list[int]:
    series = session.get(Series, series_id, with_for_update=True)
    now = utcnow()
    timeout = settings.complete_after_s_for(series.sender_ae)
    # Re-checked under the write lock: an instance may have arrived since the first look.
    if series.state != SeriesState.RECEIVING or series.last_received_at > now - timedelta(
        seconds=timeout
    ):
        return []
    series.state = SeriesState.COMPLETE
    series.completed_at = now
    record_event(
        session,
        EventKind.SERIES_COMPLETE,
        f"series {series.series_uid}: {series.instance_count} instances, none for {timeout:g} s",
        state=SeriesState.COMPLETE,
        ae_title=series.sender_ae,
        series_id=series.id,
    )
    return route(session, settings, series)


def route(session: Session, settings: Settings, series: Series) -> list[int]:
    """Make the jobs of a complete series (superseding older ones); the new job ids."""
    first = session.scalar(
        select(Instance).where(Instance.series_id == series.id).order_by(Instance.id).limit(1)
    )
    reasons: list[str] = []
    pipelines: list[tuple[str, str]] = []
    try:
        header = read_header(Path(settings.storage.spool_dir) / first.path)
    except Exception as error:  # noqa: BLE001 - whatever an unreadable file makes pydicom raise
        header = None
        reasons.append(f"the header cannot be read ({type(error).__name__})")
    if header is not None:
        own = session.scalar(select(Result.id).where(Result.series_uid == series.series_uid))
        refusal = never_routed(header, own is not None)
        if refusal is not None:
            reasons.append(refusal)
        else:
            for rule in settings.routes:
                why = route_refusal(rule, header, series.instance_count)
                if why is None:
                    pipelines.append((rule.name, rule.pipeline))
                else:
                    reasons.append(f"rule {rule.name!r}: {why}")
            if not settings.routes:
                reasons.append("no [[routes]] configured")
    if not pipelines:
        series.state = SeriesState.IGNORED
        record_event(
            session,
            EventKind.SERIES_IGNORED,
            f"series {series.series_uid} matches no route: " + "; ".join(reasons),
            state=SeriesState.IGNORED,
            ae_title=series.sender_ae,
            series_id=series.id,
        )
        LOG.info("series %s ignored: %s", series.series_uid, "; ".join(reasons))
        return []
    made = []
    for pipeline in dict.fromkeys(p for _, p in pipelines):  # one job per pipeline
        rules = ", ".join(name for name, p in pipelines if p == pipeline)
        job = Job(
            series_id=series.id, pipeline=pipeline, state=JobState.QUEUED, created_at=utcnow()
        )
        session.add(job)
        session.flush()
        record_event(
            session,
            EventKind.JOB_QUEUED,
            f"{pipeline} job for series {series.series_uid} ({series.instance_count} instances, "
            f"rule {rules})",
            state=JobState.QUEUED,
            series_id=series.id,
            job_id=job.id,
        )
        supersede_older(session, series, pipeline, job)
        made.append(job.id)
    series.state = SeriesState.ROUTED
    record_event(
        session,
        EventKind.SERIES_ROUTED,
        f"series {series.series_uid} -> {len(made)} job(s): "
        + ", ".join(f"#{job_id}" for job_id in made),
        state=SeriesState.ROUTED,
        series_id=series.id,
    )
    LOG.info("series %s routed to jobs %s", series.series_uid, made)
    return made


def supersede_older(session: Session, series: Series, pipeline: str, newer: Job) -> None:
    """Mark the series' earlier jobs of this pipeline superseded by `newer`."""
    older = session.scalars(
        select(Job).where(
            Job.series_id == series.id,
            Job.pipeline == pipeline,
            Job.id != newer.id,
            Job.state != JobState.SUPERSEDED,
        )
    )
    for job in older:
        was = job.state.value
        job.state = JobState.SUPERSEDED
        job.superseded_by = newer.id
        job.finished_at = job.finished_at or utcnow()
        record_event(
            session,
            EventKind.JOB_SUPERSEDED,
            f"job #{job.id} ({was}) superseded by job #{newer.id}: the series changed",
            state=JobState.SUPERSEDED,
            series_id=series.id,
            job_id=job.id,
        )
        for delivery in job.deliveries:
            if delivery.state != DeliveryState.PENDING:
                continue
            # Results of a partial series are not sent; the newer job sends its own.
            delivery.state = DeliveryState.FAILED
            delivery.last_error = f"not sent: job superseded by job #{newer.id}"
            delivery.next_attempt_at = None
            record_event(
                session,
                EventKind.DELIVERY_FAILED,
                f"delivery #{delivery.id} to {delivery.destination}: {delivery.last_error}",
                state=DeliveryState.FAILED,
                series_id=series.id,
                job_id=job.id,
                delivery_id=delivery.id,
            )
