"""Sending results: C-STORE SCU per delivery, with a retry policy.

A delivery is all result objects of one job to one [[destinations]] entry, sent over one
association. The scheduler calls `Sender.send_due` every [send] check_interval_s (and at once
when a job has new results); it claims due deliveries one at a time (the claim records the
sending process, node.claims, and pushes next_attempt_at ahead by a lease, so another process
does not send the same delivery) and sends them. A delivery claimed by a process of this host
that no longer runs is due again at once (`release_dead_local`, at start and every few seconds);
another host's claim waits for its lease to run out. After each try the delivery is `sent`, scheduled again with exponential back-off
(backoff_initial_s, doubled per try, at most backoff_max_s), or `failed`:

- transient (retried): no connection, an association rejected with result "rejected-transient"
  (PS3.8 9.3.4), an abort or a timeout, C-STORE statuses 0xA7xx "out of resources" and the
  general 0x0110 processing failure / 0x0213 resource limitation (PS3.7 Annex C);
- permanent (not retried, `failed` at once): an association rejected "rejected-permanent"
  (unknown AE titles), no accepted presentation context for a result's SOP class, C-STORE
  statuses 0xA9xx (data set does not match SOP class), 0xCxxx (cannot understand) and
  0x0122 / 0x0124 / 0x0117 / 0x0211 / 0x0212 (SOP class not supported, not authorised,
  invalid instance, unrecognised operation, mistyped argument).

Warnings (0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007) and 0x0111 (the destination
already has this SOP instance, e.g. from an earlier try) count as stored. After
[send] max_attempts tries a delivery is `failed`; `ctnode jobs retry JOB` queues it again.
Every try that changes a delivery's state is an event. The codes and this classification are
named in node.dicom_status, next to the statuses the node answers as SCP.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.claims import LOCAL_CHECK_INTERVAL_S, Claimant, current, release_dead_held
from node.config import DestinationSettings, Settings
from node.db import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Result,
    record_event,
    utcnow,
    write_session,
)
from node.dicom_status import REJECTED_PERMANENT, Outcome, classify_status
from node.events import EventKind
from node.jobs import settle_after_delivery
from node.scu import RemoteNode, nodelay_handlers, tls_args
from node.tls import client_context

LOG = logging.getLogger("ctnode.send")


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    message: str
    status: int | None = None


@dataclass(frozen=True)
class OutboxItem:
    kind: str
    sop_class_uid: str
    path: Path


def store_results(
    destination: DestinationSettings,
    calling_ae: str,
    items: list[OutboxItem],
    timeout_s: float,
    tls_context: ssl.SSLContext | None = None,
) -> Attempt:
    """One association to the destination, a C-STORE per result object (over TLS with
    `tls_context` when the destination has tls = true)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class in dict.fromkeys(item.sop_class_uid for item in items):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    remote = RemoteNode(
        destination.name, destination.ae_title, destination.host, destination.port, destination.tls
    )
    connected: list[bool] = []  # pynetdicom reports a refused connection as an abort
    association = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=[*nodelay_handlers(), (evt.EVT_CONN_OPEN, lambda _e: connected.append(True))],
        tls_args=tls_args(remote, tls_context),
    )
    if not association.is_established:
        if not connected:
            # pynetdicom reports a failed TLS handshake (an untrusted certificate, a wrong
            # host name) as no connection, with the reason in its own log: retried, the
            # certificate may be renewed meanwhile.
            over = " over TLS" if destination.tls else ""
            return Attempt(
                Outcome.TRANSIENT, f"no connection{over} to {where} (refused or timed out)"
            )
        if association.is_rejected and association.acceptor.primitive is not None:
            primitive = association.acceptor.primitive
            outcome = (
                Outcome.PERMANENT if primitive.result == REJECTED_PERMANENT else Outcome.TRANSIENT
            )
            return Attempt(
                outcome,
                f"association rejected by {where} ({primitive.result_str}, {primitive.reason_str})",
            )
        if association.is_aborted:
            return Attempt(Outcome.TRANSIENT, f"association aborted by {where}")
        return Attempt(Outcome.TRANSIENT, f"no association with {where} (timed out)")
    worst: Attempt | None = None
    last_status = None
    try:
        for item in items:
            dataset = pydicom.dcmread(item.path)
            try:
                response = association.send_c_store(dataset)
            except ValueError:  # no accepted presentation context for this SOP class
                worst = Attempt(
                    Outcome.PERMANENT,
                    f"{where} accepts no presentation context for the {item.kind} "
                    f"(SOP class {item.sop_class_uid})",
                )
                continue
            status = getattr(response, "Status", None)
            if status is None:
                return Attempt(Outcome.TRANSIENT, f"no C-STORE response from {where} (timeout)")
            last_status = int(status)
            outcome = classify_status(last_status)
            if outcome is not Outcome.SENT and (worst is None or outcome is Outcome.PERMANENT):
                worst = Attempt(
                    outcome, f"{item.kind}: status 0x{last_status:04X} from {where}", last_status
                )
            if not association.is_established:
                return Attempt(Outcome.TRANSIENT, f"association with {where} ended early")
    finally:
        if association.is_established:
            association.release()
    return worst or Attempt(Outcome.SENT, f"{len(items)} objects stored at {where}", last_status)


def _let_go(delivery: Delivery) -> None:
    delivery.claimed_by = delivery.claim_host = None
    delivery.claim_pid = delivery.claim_started = None


def release_dead_local(sessions: sessionmaker[Session], me: Claimant) -> list[int]:
    """Make pending deliveries claimed by a process of this host that no longer runs due at
    once (instead of after their lease); their ids. The interrupted try still counts."""
    held_here = (
        (Delivery.state == DeliveryState.PENDING)
        & (Delivery.claim_host == me.host)
        & Delivery.claim_pid.isnot(None)
    )

    def make_due(session: Session, delivery: Delivery, holder: Claimant) -> None:
        record_event(
            session,
            EventKind.DELIVERY_RELEASED,
            f"delivery #{delivery.id} to {delivery.destination}: sender "
            f"{delivery.claimed_by} no longer runs on this host (pid {holder.pid} ended) "
            f"during try {delivery.attempts}; due again at once",
            series_id=delivery.job.series_id,
            job_id=delivery.job_id,
            delivery_id=delivery.id,
        )
        delivery.next_attempt_at = utcnow()
        _let_go(delivery)

    return release_dead_held(sessions, Delivery, held_here, me, make_due)


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    job_id: int
    destination: str
    attempt: int
    items: list[OutboxItem]


class Sender:
    """Sends due deliveries; `send_due` is what the scheduler runs."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._lock = threading.Lock()  # one send_due at a time in this process
        self.claimant = current()
        self.name = f"{socket.gethostname()}:{self.claimant.pid}"
        self._last_local_check = 0.0
        # Built once at start, so a missing or unreadable certificate stops the start.
        self.tls_context = (
            client_context(settings.tls) if any(d.tls for d in settings.destinations) else None
        )

    def start(self) -> None:  # the scheduler drives it; nothing of its own to start
        LOG.info("sender ready for %d destination(s)", len(self.settings.destinations))

    def stop(self) -> None:
        with self._lock:  # waits for a delivery in progress
            pass

    def send_due(self) -> int:
        """Send every delivery that is due; how many were tried."""
        if not self._lock.acquire(blocking=False):
            return 0
        tried = 0
        try:
            self._release_dead_local()
            while True:
                try:
                    claimed = self._claim()
                except SQLAlchemyError as error:
                    LOG.error("delivery queue unavailable: %s", type(error).__name__)
                    return tried
                if claimed is None:
                    return tried
                tried += 1
                self._send(claimed)
        finally:
            self._lock.release()

    def _release_dead_local(self) -> None:
        now = time.monotonic()
        if now - self._last_local_check < LOCAL_CHECK_INTERVAL_S:
            return
        self._last_local_check = now
        try:
            released = release_dead_local(self.sessions, self.claimant)
        except SQLAlchemyError as error:
            LOG.error("delivery queue unavailable: %s", type(error).__name__)
            return
        for delivery_id in released:
            LOG.warning("delivery %d: its sender on this host ended; due again", delivery_id)

    def _destination(self, name: str) -> DestinationSettings | None:
        return next((d for d in self.settings.destinations if d.name == name), None)

    def _claim(self) -> ClaimedDelivery | None:
        now = utcnow()
        outbox = Path(self.settings.results.outbox_dir)
        due = (
            (Delivery.state == DeliveryState.PENDING)
            & (Delivery.next_attempt_at <= now)
            & (Job.state == JobState.SENDING)
        )
        with self.sessions() as session:  # a plain read first, as node.jobs.claim_next does
            if session.scalar(select(Delivery.id).join(Job).where(due).limit(1)) is None:
                return None
        with write_session(self.sessions) as session:
            delivery = session.scalar(
                select(Delivery)
                .join(Job)
                .where(due)
                .order_by(Delivery.next_attempt_at, Delivery.id)
                .limit(1)
                .with_for_update(skip_locked=True, of=Delivery)
            )
            if delivery is None:
                return None
            results = session.scalars(
                select(Result).where(Result.job_id == delivery.job_id).order_by(Result.id)
            ).all()
            delivery.attempts += 1
            delivery.claimed_by = self.name
            delivery.claim_host = self.claimant.host
            delivery.claim_pid, delivery.claim_started = self.claimant.pid, self.claimant.started
            # A lease: long enough for the association, so no other sender takes it meanwhile.
            lease = self.settings.send.timeout_s * (len(results) + 2)
            delivery.next_attempt_at = now + timedelta(seconds=lease)
            items = [OutboxItem(r.kind, r.sop_class_uid, outbox / r.path) for r in results]
            return ClaimedDelivery(
                delivery.id, delivery.job_id, delivery.destination, delivery.attempts, items
            )

    def _send(self, claimed: ClaimedDelivery) -> None:
        destination = self._destination(claimed.destination)
        start = time.perf_counter()
        if destination is None:
            attempt = Attempt(
                Outcome.PERMANENT, f"destination {claimed.destination!r} is no longer configured"
            )
        else:
            try:
                attempt = store_results(
                    destination,
                    self.settings.node.ae_title,
                    claimed.items,
                    self.settings.send.timeout_s,
                    self.tls_context,
                )
            except OSError as error:  # an outbox file vanished, or a socket error
                attempt = Attempt(Outcome.TRANSIENT, f"{type(error).__name__}: {error.strerror}")
            except Exception as error:  # noqa: BLE001 - never let one delivery stop the sender
                attempt = Attempt(Outcome.TRANSIENT, f"internal error ({type(error).__name__})")
        seconds = time.perf_counter() - start
        try:
            self._record(claimed, attempt, seconds)
        except SQLAlchemyError as error:
            LOG.error(
                "delivery %d: outcome not recorded (%s); it is tried again after its lease",
                claimed.id,
                type(error).__name__,
            )

    def _record(self, claimed: ClaimedDelivery, attempt: Attempt, seconds: float) -> None:
        send = self.settings.send
        with write_session(self.sessions) as session:
            delivery = session.get(Delivery, claimed.id)
            job = delivery.job
            delivery.last_status = attempt.status
            _let_go(delivery)
            note = f"try {claimed.attempt}, {seconds:.2f} s: {attempt.message}"
            if attempt.outcome is Outcome.SENT:
                delivery.state = DeliveryState.SENT
                delivery.sent_at = utcnow()
                delivery.last_error = None
                delivery.next_attempt_at = None
                kind, state = EventKind.DELIVERY_SENT, DeliveryState.SENT
            elif attempt.outcome is Outcome.TRANSIENT and claimed.attempt < send.max_attempts:
                wait = send.backoff_s(claimed.attempt)
                delivery.last_error = attempt.message
                delivery.next_attempt_at = utcnow() + timedelta(seconds=wait)
                note += f"; next try in {wait:g} s"
                kind, state = EventKind.DELIVERY_RETRY_SCHEDULED, None
            else:
                why = "permanent failure" if attempt.outcome is Outcome.PERMANENT else "gave up"
                delivery.state = DeliveryState.FAILED
                delivery.last_error = attempt.message
                delivery.next_attempt_at = None
                note += (
                    f"; {why} after {claimed.attempt} tr{'y' if claimed.attempt == 1 else 'ies'}"
                )
                kind, state = EventKind.DELIVERY_FAILED, DeliveryState.FAILED
            record_event(
                session,
                kind,
                f"delivery #{delivery.id} to {delivery.destination}: {note}",
                state=state,
                series_id=job.series_id,
                job_id=job.id,
                delivery_id=delivery.id,
            )
            level = logging.INFO if attempt.outcome is Outcome.SENT else logging.WARNING
            LOG.log(level, "job %d delivery %d: %s", job.id, delivery.id, note)
            session.flush()
            session.refresh(job)
            settle_after_delivery(session, job)
