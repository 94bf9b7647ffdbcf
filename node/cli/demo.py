"""`ctnode demo`: the whole node on one phantom, as a hospital would see it.

1. A small storage SCP stands in for the PACS's receiving side (calling and called AE
   DEMO-PACS); it is the node's only peer and only destination.
2. The node starts on the embedded defaults, with its data (database, spool, outbox) in a fresh
   folder under the demo's output folder, a free port, and a short completion timeout.
3. A phantom chest CT with known calcium (models.phantoms) is written (DICOM, NIfTI,
   truth.json, preview) and sent to the node by C-STORE over one association, as a PACS would.
4. The node completes the series, scores it, and sends SR, SEG and Secondary Capture back; the
   demo waits for them, reads the SR, and writes the returned overlay as a PNG.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from sqlalchemy import select

from node.config import DestinationSettings, PeerSettings, Settings
from node.scu import nodelay_handlers

DEMO_AE = "DEMO-PACS"
WAIT_FOR_RESULTS_S = 300.0
RESULT_FILES = {  # SOP class -> file name the demo keeps a returned object under
    Comprehensive3DSRStorage: "sr.dcm",
    SegmentationStorage: "seg.dcm",
    SecondaryCaptureImageStorage: "capture.dcm",
}


class DemoError(RuntimeError):
    """The demo could not run to the end; the message says where it stopped."""


class ResultsReceiver:
    """A minimal storage SCP for the results: keeps each received object as a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.received: dict[str, Dataset] = {}  # SOP Class UID -> dataset
        self.changed = threading.Condition()
        self._server = None

    def start(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=DEMO_AE)
        for sop_class in RESULT_FILES:
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return int(self._server.server_address[1])

    def _on_store(self, event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        name = RESULT_FILES[str(dataset.SOPClassUID)]
        dataset.save_as(self.folder / name, enforce_file_format=True)
        with self.changed:
            self.received[str(dataset.SOPClassUID)] = dataset
            self.changed.notify_all()
        return 0x0000

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@dataclass
class DemoRun:
    folder: Path
    truth: dict
    series_uid: str
    instances: int
    send_seconds: float = 0.0
    job: dict | None = None
    returned: dict[str, Path] = field(default_factory=dict)
    report: object = None  # node.results.sr.CalciumReport of the returned SR
    overlay_png: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def demo_settings(settings: Settings, data: Path, results_port: int) -> Settings:
    """The embedded defaults, pointed at the demo's own folder, peer and destination."""
    replace = dataclasses.replace
    return replace(
        settings,
        node=replace(settings.node, port=0, bind="127.0.0.1"),
        storage=replace(
            settings.storage,
            spool_dir=data / "spool",
            database_url=f"sqlite:///{data / 'ctnode.db'}",
            min_free_mb=min(settings.storage.min_free_mb, 256),
        ),
        series=replace(
            settings.series, complete_after_s=settings.demo.complete_after_s, check_interval_s=0.5
        ),
        send=replace(settings.send, check_interval_s=0.5, backoff_initial_s=1.0),
        results=replace(settings.results, outbox_dir=data / "outbox"),
        peers=(PeerSettings("demo-pacs", DEMO_AE, "127.0.0.1", results_port),),
        destinations=(DestinationSettings("demo-pacs", DEMO_AE, "127.0.0.1", results_port),),
        # The demo shows the calcium result (SR, SEG, overlay) and keeps to calcium rules, so
        # an organs rule (commented out of the embedded defaults while the shipped organ model
        # is weak) could not lengthen it; `ctnode segment` shows organs offline.
        routes=tuple(route for route in settings.routes if route.pipeline == "calcium"),
        # The demo's node is not watched; its HTTP port would clash with a running node's.
        http=replace(settings.http, enabled=False),
    )


def send_series(files: list[Path], host: str, port: int, called_ae: str) -> None:
    """C-STORE the files over one association, as a PACS forwards a series."""
    ae = AE(ae_title=DEMO_AE)
    ae.add_requested_context(CTImageStorage)
    association = ae.associate(host, port, ae_title=called_ae, evt_handlers=nodelay_handlers())
    if not association.is_established:
        raise DemoError(f"the node at {host}:{port} did not accept the association")
    try:
        for path in files:
            status = association.send_c_store(pydicom.dcmread(path))
            if getattr(status, "Status", None) != 0x0000:
                raise DemoError(f"the node refused {path.name}: {status}")
    finally:
        association.release()


def write_phantom(settings: Settings, folder: Path) -> tuple[dict, list[Path]]:
    """The demo's phantom case (as before: dicom/, NIfTI, truth.json, preview.png)."""
    import json

    from models.phantoms.case import generate_case
    from models.phantoms.preview import write_preview
    from models.phantoms.writer import write_case

    case = generate_case(settings.demo.seed, settings.demo.category)
    write_case(case, folder, dicom=True)
    write_preview(case, folder / "preview.png")
    truth = json.loads((folder / "truth.json").read_text())
    return truth, sorted((folder / "dicom").glob("*.dcm"))


def wait_for_job(service, series_uid: str, timeout_s: float) -> int:
    """The id of the series' job once it is done (or failed)."""
    from node.db import Job, JobState, Series

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with service.sessions() as session:
            job = session.scalar(
                select(Job)
                .join(Series)
                .where(Series.series_uid == series_uid)
                .order_by(Job.id.desc())
                .limit(1)
            )
            if job is not None and job.state in (JobState.DONE, JobState.FAILED):
                return job.id
            ignored = session.scalar(select(Series.state).where(Series.series_uid == series_uid))
            if ignored is not None and ignored.value == "ignored":
                raise DemoError("the node ignored the series (see `ctnode status`)")
        time.sleep(0.2)
    raise DemoError(f"no result within {timeout_s:g} s")


def run_demo(settings: Settings, folder: Path, progress=lambda message: None) -> DemoRun:
    """Run the whole demo; what happened, for the CLI to print."""
    from node.admin import show_job
    from node.results.capture import save_png
    from node.results.sr import read_calcium_sr
    from node.service import Service

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "node"
    shutil.rmtree(data, ignore_errors=True)  # a fresh node per run: its own database and spool
    shutil.rmtree(folder / "returned", ignore_errors=True)

    progress("generating a phantom chest CT ...")
    truth, files = write_phantom(settings, folder)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    run = DemoRun(folder, truth, series_uid, len(files))
    run.seconds["phantom"] = time.perf_counter() - start

    receiver = ResultsReceiver(folder / "returned")
    service = Service(demo_settings(settings, data, receiver.start()))
    try:
        progress("starting the node ...")
        service.start()
        host, port = service.receiver.address
        progress(f"sending {len(files)} CT slices to the node ({settings.node.ae_title}) ...")
        sent = time.perf_counter()
        send_series(files, host, port, settings.node.ae_title)
        run.send_seconds = time.perf_counter() - sent
        progress(
            f"waiting {settings.demo.complete_after_s:g} s for the series to complete, "
            "then scoring ..."
        )
        job_id = wait_for_job(service, series_uid, WAIT_FOR_RESULTS_S)
        run.seconds["after_last_instance"] = time.perf_counter() - sent - run.send_seconds
        with service.sessions() as session:
            run.job = show_job(session, job_id)
    finally:
        service.stop()
        receiver.stop()
    for sop_class, dataset in receiver.received.items():
        run.returned[RESULT_FILES[sop_class].removesuffix(".dcm")] = (
            receiver.folder / RESULT_FILES[sop_class]
        )
        if sop_class == Comprehensive3DSRStorage:
            run.report = read_calcium_sr(dataset)
        if sop_class == SecondaryCaptureImageStorage:
            run.overlay_png = save_png(dataset, folder / "overlay.png")
    run.seconds["total"] = time.perf_counter() - start
    return run
