"""The DICOM listener (SCP): association policy, C-ECHO, C-STORE into the spool and database.

An instance is answered with success (0x0000) only after its file is durably in the spool and
its database rows are committed, so a sender may delete its copy as soon as it sees success.
A second copy of a SOP Instance UID is answered with success and changes nothing (one event).
Bad input gets a failure status and an `instance.rejected` event with the reason; nothing a
sender does makes the listener stop. Log lines and events carry UIDs and AE titles only.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom.config
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.character_sets import CharacterSetError, check_character_set
from node.config import PeerSettings, Settings
from node.db import add_received_instance, find_instance, record_event, write_session
from node.dicom_status import (
    ERROR_CANNOT_UNDERSTAND,
    ERROR_CANNOT_UNDERSTAND_UNDECODABLE,
    ERROR_CANNOT_UNDERSTAND_UNEXPECTED,
    ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS,
    REFUSED_OUT_OF_RESOURCES,
    REFUSED_OUT_OF_RESOURCES_INSTANCE_TOO_LARGE,
    SUCCESS,
)
from node.events import EventKind
from node.pixel_checks import MalformedPixelData, PixelDataMismatch, check_pixel_data
from node.receive_dimse import OversizeDataSet, capped_dimse_handlers
from node.receive_socket import receive_socket_handlers
from node.scu import nodelay_handlers
from node.spool import (
    InvalidUIDError,
    instance_relative_path,
    is_valid_uid,
    validate_uid,
    write_durably,
)
from node.tls import handshake_handlers, is_tls, listener_context

LOG = logging.getLogger("ctnode.receive")

# Transfer syntaxes accepted for every storage SOP class. The compressed ones are stored as
# received (no transcoding); pydicom decodes them later with python-gdcm (JPEG baseline,
# extended and lossless, JPEG-LS, JPEG 2000) or its built-in RLE and deflate support.
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
# Larger PDUs than pynetdicom's 16 kB default: fewer, bigger reads for 512 kB CT slices.
MAX_PDU_BYTES = 1 << 20
# Connections the kernel queues for the listener before it accepts them (listen(2)).
LISTEN_BACKLOG = 128

# Inserting an instance races with other receivers only on a new series (PostgreSQL); the
# second try finds the series made by the other one.
INSERT_ATTEMPTS = 3

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE not recognised
REJECT_BUSY = (0x02, 0x03, 0x02)  # transient, presentation provider, local limit exceeded


ERROR_COMMENT_MAX = 64  # Error Comment (0000,0902) is LO: 64 characters


def error_comment(reason: str, sop_uid: str | None = None) -> str:
    """The Error Comment for a refusal: the reason first (cut at 64 characters), the instance
    UID after it only when the whole fits. Characters outside printable ASCII and backslashes
    (a value separator) become "?": the command set is in the default repertoire."""
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in reason)
    if sop_uid:
        with_uid = f"{text}; instance {sop_uid}"
        if len(with_uid) <= ERROR_COMMENT_MAX:
            return with_uid
    return text[:ERROR_COMMENT_MAX]


@dataclass(frozen=True)
class StoreOutcome:
    status: int
    reason: str = ""  # empty on success; leads the sender's Error Comment
    duplicate: bool = False  # success because the instance was already stored
    sop_uid: str | None = None  # the refused instance's valid UID, where known

    def as_dataset(self) -> Dataset:
        response = Dataset()
        response.Status = self.status
        if self.reason:
            response.ErrorComment = error_comment(self.reason, self.sop_uid)
        return response


@dataclass(frozen=True)
class AssociationRefusal:
    reason: str
    result_source_diagnostic: tuple[int, int, int]


@dataclass
class AssociationCounts:
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    started: float = field(default_factory=time.monotonic)


def _host_addresses(host: str) -> set[str]:
    """IP addresses a configured peer host stands for (literal, or resolved by DNS)."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return {str(ipaddress.ip_address(info[4][0])) for info in infos}


def _normalised_address(address: str) -> str:
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def busy_refusal(settings: Settings) -> AssociationRefusal:
    """All association slots taken: transient, the sender retries later."""
    return AssociationRefusal(
        f"more than [node] max_associations={settings.node.max_associations} at once",
        REJECT_BUSY,
    )


def association_refusal(
    settings: Settings,
    calling_ae: str,
    called_ae: str,
    address: str,
    active: int = 1,
    over_tls: bool = False,
) -> AssociationRefusal | None:
    """Why an association request must be rejected, or None to accept it.

    The calling AE title must belong to a [[peers]] entry (unless accept_unknown_peers), and
    with check_peer_host the request must come from that peer's host. `active` counts the
    associations being served, this request included; beyond max_associations the refusal is
    transient (the sender retries later). A peer configured with tls = true must come over
    the TLS listener (`over_tls`).
    """
    calling, called = calling_ae.strip(), called_ae.strip()
    if active > settings.node.max_associations:
        return busy_refusal(settings)
    if called != settings.node.ae_title.strip():
        return AssociationRefusal(
            f"called AE title {called!r} is not this node's ({settings.node.ae_title!r})",
            REJECT_CALLED_AE,
        )
    if settings.node.accept_unknown_peers:
        return None
    peer: PeerSettings | None = settings.peer_by_ae_title(calling)
    if peer is None:
        return AssociationRefusal(
            f"calling AE title {calling!r} is not a configured peer", REJECT_CALLING_AE
        )
    if peer.tls and not over_tls:
        return AssociationRefusal(
            f"peer {peer.name!r} must associate over TLS ([tls] port), not the plain port",
            REJECT_CALLING_AE,
        )
    if settings.node.check_peer_host:
        try:
            allowed = _host_addresses(peer.host)
        except OSError as error:
            return AssociationRefusal(
                f"peer {peer.name!r} host {peer.host!r} cannot be resolved ({error})",
                REJECT_CALLING_AE,
            )
        if _normalised_address(address) not in allowed:
            return AssociationRefusal(
                f"calling AE title {calling!r} (peer {peer.name!r}) from {address}, "
                f"not from its host {peer.host!r}",
                REJECT_CALLING_AE,
            )
    return None


def _uid_for_message(value: object) -> str:
    """A UID for a log line or event; anything else is not repeated (it could be anything)."""
    return str(value) if is_valid_uid(str(value)) else "(not a valid UID)"


def _optional_int(dataset: Dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _optional_code_string(dataset: Dataset, keyword: str) -> str | None:
    try:
        value = dataset.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable optional element is just absent
        return None
    return value[:16] if isinstance(value, str) and value else None


def instance_row(
    dataset: Dataset, transfer_syntax_uid: str, relative: Path, size: int, sender_ae: str
) -> dict:
    """The database row of an instance stored at `relative` in the spool (add_instance's
    arguments). Its four UIDs must have been validated; optional elements that cannot be read
    are left empty, never a reason to refuse. The receiver and the start-up recovery of spool
    files (spool_recovery.py) both build rows here."""
    return {
        "study_uid": str(dataset.StudyInstanceUID),
        "series_uid": str(dataset.SeriesInstanceUID),
        "sop_instance_uid": str(dataset.SOPInstanceUID),
        "sop_class_uid": str(dataset.SOPClassUID),
        "transfer_syntax_uid": transfer_syntax_uid,
        "modality": _optional_code_string(dataset, "Modality"),
        "instance_number": _optional_int(dataset, "InstanceNumber"),
        "path": relative.as_posix(),
        "size_bytes": size,
        "sender_ae": sender_ae,
    }


class AssociationSlots:
    """The associations being served, each from its accepted A-ASSOCIATE-RQ until its
    connection closes (or it is released or aborted, whichever comes first).

    pynetdicom counts its acceptor threads instead: connections that have not asked for an
    association yet (a health check's connect and close) and associations still closing held
    slots, which let probes lock senders out. An association whose thread has ended holds no
    slot either, whatever events it missed on the way (a pynetdicom DUL thread that dies of
    an exception sends none).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[int, Association] = {}
        self._lock = threading.Lock()

    def claim(self, association: Association) -> bool:
        """Take a slot for the association; False when all are taken."""
        with self._lock:
            self._forget_ended()
            if len(self._held) >= self.limit:
                return False
            self._held[id(association)] = association
            return True

    def release(self, association: Association) -> None:
        """Free the association's slot (nothing when it holds none)."""
        with self._lock:
            self._held.pop(id(association), None)

    def __len__(self) -> int:
        with self._lock:
            self._forget_ended()
            return len(self._held)

    def _forget_ended(self) -> None:
        for key, association in list(self._held.items()):
            if association.ident is not None and not association.is_alive():
                del self._held[key]


class InstanceStore:
    """Stores one received instance: checks, durable file, database rows, in that order."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.spool_dir = Path(settings.storage.spool_dir)
        self.min_free_bytes = settings.storage.min_free_mb * 1024 * 1024
        self.max_instance_mb = settings.storage.max_instance_mb
        self.sessions = sessions

    def refuse(
        self,
        status: int,
        reason: str,
        calling_ae: str,
        sop_uid: str | None = None,
        series_id: int | None = None,
    ) -> StoreOutcome:
        """Log and record a refusal. `reason` says what is wrong without the instance (it
        leads the sender's Error Comment); `sop_uid`, a valid UID, names the instance."""
        what = f"instance {sop_uid}" if sop_uid else "instance"
        LOG.warning("%s from %s refused (0x%04X): %s", what, calling_ae, status, reason)
        try:
            with write_session(self.sessions) as session:
                record_event(
                    session,
                    EventKind.INSTANCE_REJECTED,
                    f"status 0x{status:04X}: {what}: {reason}",
                    ae_title=calling_ae,
                    series_id=series_id,
                )
        except SQLAlchemyError as error:  # the database may be why it failed in the first place
            LOG.error("could not record the refusal in the database: %s", type(error).__name__)
        return StoreOutcome(status, reason, sop_uid=sop_uid)

    def store(
        self,
        dataset: Dataset,
        encoded_dataset: bytes,
        file_meta: Dataset,
        requested_sop_class_uid: str,
        requested_sop_instance_uid: str,
        calling_ae: str,
    ) -> StoreOutcome:
        # The request's UID names the instance in refusals until the dataset's own is read.
        requested_uid = (
            requested_sop_instance_uid if is_valid_uid(requested_sop_instance_uid) else None
        )
        try:
            study_uid = validate_uid(dataset.get("StudyInstanceUID"), "StudyInstanceUID")
            series_uid = validate_uid(dataset.get("SeriesInstanceUID"), "SeriesInstanceUID")
            sop_uid = validate_uid(dataset.get("SOPInstanceUID"), "SOPInstanceUID")
            sop_class_uid = validate_uid(dataset.get("SOPClassUID"), "SOPClassUID")
        except InvalidUIDError as error:
            return self.refuse(ERROR_CANNOT_UNDERSTAND, str(error), calling_ae, requested_uid)
        except Exception as error:  # noqa: BLE001 - a corrupt element, whatever pydicom raises
            reason = f"cannot read the identifying UIDs ({type(error).__name__})"
            return self.refuse(
                ERROR_CANNOT_UNDERSTAND_UNDECODABLE, reason, calling_ae, requested_uid
            )
        if sop_class_uid != requested_sop_class_uid:
            return self.refuse(
                ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS,
                f"SOP Class UID differs from the request's ({sop_class_uid} in the dataset, "
                f"{_uid_for_message(requested_sop_class_uid)} requested)",
                calling_ae,
                sop_uid,
            )
        if sop_uid != requested_sop_instance_uid:
            return self.refuse(
                ERROR_CANNOT_UNDERSTAND,
                f"SOP Instance UID is not the request's "
                f"({_uid_for_message(requested_sop_instance_uid)})",
                calling_ae,
                sop_uid,
            )
        content_problem = self._content_problem(dataset, str(file_meta.TransferSyntaxUID))
        if content_problem is not None:
            status, reason = content_problem
            return self.refuse(status, reason, calling_ae, sop_uid)

        relative = instance_relative_path(study_uid, series_uid, sop_uid)
        # Only an instance whose file exists can be a copy we keep, so first sends skip the
        # database look-up; one that races past this check fails the unique constraint below
        # and is recognised there.
        if (self.spool_dir / relative).exists() and self._is_duplicate(
            sop_uid, series_uid, calling_ae
        ):
            return StoreOutcome(SUCCESS, duplicate=True)
        try:
            free = shutil.disk_usage(self._existing_parent(self.spool_dir)).free
            if free < self.min_free_bytes:
                return self.refuse(
                    REFUSED_OUT_OF_RESOURCES,
                    f"spool has {free // 2**20} MB free, below [storage] min_free_mb",
                    calling_ae,
                    sop_uid,
                )
            size = write_durably(
                self.spool_dir / relative, [_part10_header(file_meta), encoded_dataset]
            )
        except OSError as error:
            return self.refuse(
                REFUSED_OUT_OF_RESOURCES,
                f"cannot write to the spool ({error.strerror or type(error).__name__})",
                calling_ae,
                sop_uid,
            )

        row = instance_row(dataset, str(file_meta.TransferSyntaxUID), relative, size, calling_ae)
        for attempt in range(INSERT_ATTEMPTS):
            try:
                with write_session(self.sessions) as session:
                    add_received_instance(session, **row)
                return StoreOutcome(SUCCESS)
            except IntegrityError:
                # A concurrent association (PostgreSQL; SQLite writers queue) committed the
                # same instance, or created the same new series, between our check and insert.
                if self._is_duplicate(sop_uid, series_uid, calling_ae):
                    return StoreOutcome(SUCCESS, duplicate=True)
                if attempt + 1 == INSERT_ATTEMPTS:
                    reason = "database constraint keeps failing"
                    break
            except SQLAlchemyError as error:
                reason = f"database error ({type(error).__name__})"
                break
        # The file stays in the spool without a row; a resend rewrites it atomically.
        return self.refuse(REFUSED_OUT_OF_RESOURCES, reason, calling_ae, sop_uid)

    @staticmethod
    def _content_problem(dataset: Dataset, transfer_syntax_uid: str) -> tuple[int, str] | None:
        """(status, reason) when the node could not use what the instance holds: a character
        set it cannot interpret, or pixel data that does not fit the image (node.pixel_checks);
        None when it can."""
        try:
            check_character_set(dataset)
            check_pixel_data(dataset, transfer_syntax_uid)
        except CharacterSetError as error:
            return ERROR_CANNOT_UNDERSTAND, str(error)
        except PixelDataMismatch as error:
            return ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS, str(error)
        except MalformedPixelData as error:
            return ERROR_CANNOT_UNDERSTAND, str(error)
        except Exception as error:  # noqa: BLE001 - a corrupt element, whatever pydicom raises
            return (
                ERROR_CANNOT_UNDERSTAND_UNDECODABLE,
                f"image attributes cannot be read ({type(error).__name__})",
            )
        return None

    def _is_duplicate(self, sop_uid: str, series_uid: str, calling_ae: str) -> bool:
        """True (and one event) when the instance is already stored."""
        with self.sessions() as session:  # a plain read: no write lock for the common case
            existing = find_instance(session, sop_uid)
            if existing is None:
                return False
            existing_series_id = existing.series_id
            note = "" if existing.series.series_uid == series_uid else " (under another series)"
        with write_session(self.sessions) as session:
            record_event(
                session,
                EventKind.INSTANCE_DUPLICATE,
                f"instance {sop_uid} received again from {calling_ae}; kept the first copy{note}",
                ae_title=calling_ae,
                series_id=existing_series_id,
            )
        LOG.info("instance %s received again from %s: already stored", sop_uid, calling_ae)
        return True

    @staticmethod
    def _existing_parent(path: Path) -> Path:
        while not path.exists() and path != path.parent:
            path = path.parent
        return path


def _part10_header(file_meta: Dataset) -> bytes:
    """Preamble, 'DICM' and the file meta information of a Part 10 file."""
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    return buffer.getvalue()


class Receiver:
    """The node's DICOM listener; start() returns once it accepts connections."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = InstanceStore(settings, sessions)
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: ThreadedAssociationServer | None = None  # [tls] enabled
        self._counts: dict[int, AssociationCounts] = {}
        self.slots = AssociationSlots(settings.node.max_associations)
        self._counts_lock = threading.Lock()
        # No patient data in the log: pynetdicom logs C-FIND/MOVE/GET identifiers unless told
        # not to, and pydicom's value validation warns with the offending value (a malformed
        # PatientName would be printed). The receiver checks what it relies on itself.
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

    def _make_ae(self) -> AE:
        node = self.settings.node
        ae = AE(ae_title=node.ae_title)
        # The node counts associations itself (AssociationSlots, applied in _on_requested);
        # pynetdicom's own limit counts every open connection, probes included, so it is set
        # out of reach rather than left to lock senders out.
        ae.maximum_associations = 1 << 30
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.network_timeout = node.network_timeout_s
        ae.acse_timeout = node.network_timeout_s
        ae.dimse_timeout = node.network_timeout_s
        # The allow-list and the association limit are applied in _on_requested, which records
        # the reason before it replies.
        ae.require_called_aet = False
        ae.require_calling_aet = []
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        return ae

    @property
    def address(self) -> tuple[str, int]:
        """(bind address, port) the listener is on (the real port when configured as 0)."""
        if self._server is None:
            raise RuntimeError("the receiver is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """(bind address, port) of the TLS listener; None when [tls] is not enabled."""
        if self._tls_server is None:
            return None
        host, port = self._tls_server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        handlers = [
            *nodelay_handlers(),  # Nagle off on accepted connections too (DESIGN.md conventions)
            *receive_socket_handlers(),  # PDUs read bounded, timed out, in one buffer each
            *capped_dimse_handlers(self.settings.storage.max_instance_mb * 1024 * 1024),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
            (evt.EVT_CONN_CLOSE, self._on_connection_closed),
            (evt.EVT_C_STORE, self._on_c_store),
        ]
        node, tls = self.settings.node, self.settings.tls
        ae = self._make_ae()
        self._server = ae.start_server((node.bind, node.port), block=False, evt_handlers=handlers)
        # socketserver's backlog of 5 drops the SYN of a sender that connects during a burst of
        # connections (health checks, a scan), which then waits a second or more to retry.
        self._server.socket.listen(LISTEN_BACKLOG)
        host, port = self.address
        LOG.info("listening as %s on %s:%d", node.ae_title, host, port)
        if tls.enabled:
            # A second listener, TLS only, beside the plain one (node.tls); the handshake runs
            # first in each connection's own thread.
            self._tls_server = ae.start_server(
                (node.bind, tls.port),
                block=False,
                evt_handlers=[*handshake_handlers(node.network_timeout_s), *handlers],
                ssl_context=listener_context(tls),
            )
            self._tls_server.socket.listen(LISTEN_BACKLOG)
            host, port = self.tls_address
            LOG.info("listening as %s on %s:%d (TLS)", node.ae_title, host, port)

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let running associations finish for up to grace_s, abort the rest.

        Aborting is safe: an instance is acknowledged only once it is stored, so the sender
        resends whatever was in flight.
        """
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        self._server = self._tls_server = None
        if not servers:
            return
        for server in servers:
            server.shutdown()
        deadline = time.monotonic() + grace_s
        while any(s.active_associations for s in servers) and time.monotonic() < deadline:
            time.sleep(0.05)
        for association in [a for s in servers for a in s.active_associations]:
            LOG.warning(
                "aborting the association from %s at shutdown", association.requestor.ae_title
            )
            association.abort()
        LOG.info("listener stopped")

    # --- association events ------------------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        association: Association = event.assoc
        request = association.requestor.primitive
        calling_ae = str(request.calling_ae_title).strip()
        address = association.requestor.address
        transport = association.dul.socket
        refusal = association_refusal(
            self.settings,
            calling_ae,
            str(request.called_ae_title),
            address,
            over_tls=transport is not None and is_tls(transport.socket),
        )
        if refusal is None and not self.slots.claim(association):
            refusal = busy_refusal(self.settings)
        if refusal is None:
            return
        # Recorded before the reply, so the event exists when the sender learns of the refusal.
        self._record_association_refusal(calling_ae, address, refusal.reason)
        # pynetdicom skips its own negotiation when the EVT_REQUESTED handler rejects; kill()
        # waits until the A-ASSOCIATE-RJ is on the wire before the socket is closed (as
        # pynetdicom's own rejections do).
        association.acse.send_reject(*refusal.result_source_diagnostic)
        association.kill()

    def _record_association_refusal(self, calling_ae: str, address: str, reason: str) -> None:
        LOG.warning("association from %r at %s rejected: %s", calling_ae, address, reason)
        try:
            with write_session(self.sessions) as session:
                record_event(
                    session,
                    EventKind.ASSOCIATION_REJECTED,
                    f"association from {calling_ae!r} at {address} rejected: {reason}",
                    ae_title=calling_ae[:16],
                )
        except SQLAlchemyError as error:
            LOG.error("could not record the rejection in the database: %s", type(error).__name__)

    def _on_established(self, event: evt.Event) -> None:
        association: Association = event.assoc
        with self._counts_lock:
            self._counts[id(association)] = AssociationCounts()
        LOG.info(
            "association from %s at %s accepted",
            association.requestor.ae_title.strip(),
            association.requestor.address,
        )

    def _on_connection_closed(self, event: evt.Event) -> None:
        self.slots.release(event.assoc)

    def _on_closed(self, event: evt.Event) -> None:
        association: Association = event.assoc
        self.slots.release(association)
        with self._counts_lock:
            counts = self._counts.pop(id(association), None)
        if counts is None:  # rejected before it was established
            return
        how = "released" if event.event is evt.EVT_RELEASED else "aborted"
        LOG.info(
            "association from %s %s after %.1f s: %d stored, %d duplicates, %d refused",
            association.requestor.ae_title.strip(),
            how,
            time.monotonic() - counts.started,
            counts.stored,
            counts.duplicates,
            counts.refused,
        )

    # --- C-STORE -----------------------------------------------------------------------------

    def _on_c_store(self, event: evt.Event) -> Dataset:
        association: Association = event.assoc
        calling_ae = association.requestor.ae_title.strip()
        request = event.request
        requested = str(request.AffectedSOPInstanceUID or "")
        requested_sop_uid = requested if is_valid_uid(requested) else None
        if isinstance(request.DataSet, OversizeDataSet):  # dropped while it arrived
            outcome = self.store.refuse(
                REFUSED_OUT_OF_RESOURCES_INSTANCE_TOO_LARGE,
                f"{request.DataSet.received_bytes >> 20} MB, over "
                f"[storage] max_instance_mb={self.store.max_instance_mb}",
                calling_ae,
                requested_sop_uid,
            )
            self._count(association, outcome)
            return outcome.as_dataset()
        try:
            dataset = event.dataset
        except Exception as error:  # noqa: BLE001 - whatever the bytes made pydicom raise
            outcome = self.store.refuse(
                ERROR_CANNOT_UNDERSTAND_UNDECODABLE,
                f"dataset cannot be decoded ({type(error).__name__})",
                calling_ae,
                requested_sop_uid,
            )
        else:
            try:
                file_meta = event.file_meta
                file_meta.SourceApplicationEntityTitle = calling_ae
                outcome = self.store.store(
                    dataset,
                    request.DataSet.getvalue(),
                    file_meta,
                    str(request.AffectedSOPClassUID),
                    str(request.AffectedSOPInstanceUID),
                    calling_ae,
                )
            except (OSError, SQLAlchemyError) as error:  # e.g. the database went away
                outcome = self.store.refuse(
                    REFUSED_OUT_OF_RESOURCES,
                    f"storage unavailable ({type(error).__name__})",
                    calling_ae,
                    requested_sop_uid,
                )
            except Exception as error:  # noqa: BLE001 - never let one instance stop the node
                # Only the type: an exception's text may quote values from the dataset.
                LOG.error(
                    "unexpected %s while storing %s",
                    type(error).__name__,
                    requested_sop_uid or "(not a valid UID)",
                )
                outcome = self.store.refuse(
                    ERROR_CANNOT_UNDERSTAND_UNEXPECTED,
                    f"internal error ({type(error).__name__})",
                    calling_ae,
                    requested_sop_uid,
                )
        self._count(association, outcome)
        return outcome.as_dataset()

    def _count(self, association: Association, outcome: StoreOutcome) -> None:
        with self._counts_lock:
            counts = self._counts.get(id(association))
            if counts is None:
                return
            if outcome.status != SUCCESS:
                counts.refused += 1
            elif outcome.duplicate:
                counts.duplicates += 1
            else:
                counts.stored += 1
