"""Orthanc as the hospital's PACS, end to end: Orthanc sends a phantom chest CT study to the
node (REST `POST /modalities/NODE/store`), and the SR, SEG and Secondary Capture of the calcium
job and the organ SEG of the organs job come back into Orthanc, into the same study. The SR's
total equals `ctnode score` on the same series. The organ model is the shipped base model when
it is installed and finds a heart on a phantom (tests/organ_models.py), else a random-weight stand-in (tests/organ_models.py) that the node
loads through [organs] models_dir and model like an imported one.
Also: a series split over two associations gives one job, the same series sent twice gives
no second result set, and the job log shows each stage with its time.

Orthanc is installed by tests/run.sh (apt package orthanc) and started here on free ports;
the node is `ctnode serve` in a subprocess. The tests run in file order.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from models.calcium.inference import WEIGHTS_DIR
from tests.nodeproc import NodeProcess, free_port, wait_for
from tests.organ_models import STANDIN_NAME, organ_model
from tests.orthanc import ORTHANC_AE, Orthanc, require_orthanc
from tests.tools import REPO

COMPLETE_AFTER_S = 3.0
SPLIT_PAUSE_S = 1.0  # shorter than the completion timeout: the two halves are one series
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class Phantom:
    folder: Path
    files: list[Path]
    series_uid: str
    study_id: str = ""  # Orthanc's id of the study
    instance_ids: list[str] | None = None


def make_phantom(folder: Path, seed: int, category: int) -> Phantom:
    from models.phantoms.case import CaseOptions, generate_case
    from models.phantoms.writer import write_case

    case = generate_case(seed, category, CaseOptions(protocol=(2.5, 2.5), n_slices=60))
    write_case(case, folder, dicom=True)
    files = sorted((folder / "dicom").glob("*.dcm"))
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    return Phantom(folder, files, uid)


@dataclass
class Site:
    node: NodeProcess
    orthanc: Orthanc
    weights: Path
    organ_model: str  # [organs] model: "" (the shipped base) or the stand-in's name
    main: Phantom
    split: Phantom


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[Site]:
    require_orthanc()
    root = tmp_path_factory.mktemp("site")
    models_dir, model = organ_model(tmp_path_factory)
    orthanc = Orthanc(root / "orthanc", free_port(), free_port())
    node = NodeProcess(
        root / "node",
        free_port(),
        sections={
            "series": {"complete_after_s": COMPLETE_AFTER_S, "check_interval_s": 0.5},
            "send": {"check_interval_s": 0.5, "backoff_initial_s": 1.0},
            "calcium": {"weights_dir": str(weights), "device": "cpu"},
            "organs": {"models_dir": str(models_dir), "model": model, "device": "cpu"},
        },
        lists={
            # The embedded defaults route calcium only; a site with an organ model adds the
            # organs rule config.toml offers commented out.
            "routes": [
                {"name": "chest-ct-calcium", "pipeline": "calcium"},
                {"name": "chest-ct-organs", "pipeline": "organs"},
            ],
            "peers": [
                {
                    "name": "pacs",
                    "ae_title": ORTHANC_AE,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                }
            ],
            "destinations": [
                {
                    "name": "pacs",
                    "ae_title": ORTHANC_AE,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                }
            ],
        },
    )
    main = make_phantom(root / "main", 21, 3)
    split = make_phantom(root / "split", 22, 2)
    node.start()
    try:
        orthanc.start({"NODE": ("CTNODE", "127.0.0.1", node.port)})
        for phantom in (main, split):
            answers = orthanc.upload(phantom.files)
            phantom.study_id = answers[0]["ParentStudy"]
            phantom.instance_ids = [a["ID"] for a in answers]
        yield Site(node, orthanc, weights, model, main, split)
    finally:
        orthanc.stop()
        code = node.stop()
    assert code == 0, node.log_text()[-3000:]


def jobs_of(node: NodeProcess, series_uid: str, pipeline: str = "calcium") -> list[tuple[int, str]]:
    return node.query(
        "SELECT jobs.id, jobs.state FROM jobs JOIN series ON series.id = jobs.series_id "
        "WHERE series.series_uid = ? AND jobs.pipeline = ? ORDER BY jobs.id",
        series_uid,
        pipeline,
    )


def done_job(
    node: NodeProcess, series_uid: str, timeout_s: float = 240, pipeline: str = "calcium"
) -> int:
    def finished():
        rows = jobs_of(node, series_uid, pipeline)
        return rows[-1] if rows and rows[-1][1] in ("done", "failed") else None

    job_id, state = wait_for(finished, timeout_s, f"the job of series {series_uid}")
    assert state == "done", json.dumps(node.cli_json("jobs", "show", str(job_id)), indent=1)
    return job_id


def results_in_orthanc(site: Site, phantom: Phantom) -> list[dict]:
    return [
        i
        for i in site.orthanc.study_instances(phantom.study_id)
        if i["series_uid"] != phantom.series_uid
    ]


def results_of(node: NodeProcess, job_id: int) -> dict[str, tuple[str, str]]:
    return {
        kind: (sop_class, sop_uid)
        for kind, sop_class, sop_uid in node.query(
            "SELECT kind, sop_class_uid, sop_instance_uid FROM results WHERE job_id = ?", job_id
        )
    }


def test_orthanc_sends_a_study_and_gets_sr_seg_and_capture_back_in_it(site: Site) -> None:
    answer = site.orthanc.store("NODE", [site.main.study_id])
    assert answer.get("FailedInstancesCount", 0) == 0, answer
    job_id = done_job(site.node, site.main.series_uid)
    organs_job = done_job(site.node, site.main.series_uid, 600, pipeline="organs")
    made = results_of(site.node, job_id)
    assert {"sr", "capture"} <= set(made)
    organs_made = results_of(site.node, organs_job)
    assert set(organs_made) == {"seg"} and organs_made["seg"][0] == SEG_CLASS
    expected = [uid for _, uid in made.values()] + [organs_made["seg"][1]]
    returned = wait_for(
        lambda: (
            (found := results_in_orthanc(site, site.main)) and len(found) == len(expected) and found
        ),
        60,
        "the results in Orthanc",
    )
    # Every result object is in the source study (Orthanc files them under the study's UID).
    assert {i["sop_class_uid"] for i in returned} == {c for c, _ in made.values()} | {SEG_CLASS}
    assert sorted(i["sop_uid"] for i in returned) == sorted(expected)
    assert all(i["modality"] in ("SR", "SEG", "OT", "CT") for i in returned)
    if site.weights == WEIGHTS_DIR:
        # The shipped model's feedback on a category-3 phantom reaches the region threshold
        # (a tiny test model's map is too diffuse to, so then there is no SEG to expect).
        assert "seg" in made and SEG_CLASS in {i["sop_class_uid"] for i in returned}
    capture = next(i for i in returned if i["sop_class_uid"] == SecondaryCaptureImageStorage)
    ds = pydicom.dcmread(io.BytesIO(site.orthanc.file(capture["id"])))
    assert ds.BurnedInAnnotation == "YES" and ds.pixel_array.shape[2] == 3


def _read_sr(site: Site, instance_id: str):
    from node.results.sr import read_calcium_sr

    return read_calcium_sr(pydicom.dcmread(io.BytesIO(site.orthanc.file(instance_id))))


def test_sr_total_equals_ctnode_score_on_the_same_series(site: Site) -> None:
    sr = next(i for i in results_in_orthanc(site, site.main) if i["sop_class_uid"] == SR_CLASS)
    report = _read_sr(site, sr["id"])
    score = subprocess.run(
        [sys.executable, "-m", "node.cli", "score", str(site.main.folder / "dicom"), "--json"]
        + ["--weights", str(site.weights)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    expected = json.loads(score.stdout)
    assert report.agatston_total == pytest.approx(expected["agatston_total"], abs=0.011)
    for artery, value in expected["agatston_per_artery"].items():
        assert report.agatston_per_artery[artery] == pytest.approx(value, abs=0.011)
    assert report.category == expected["category"] and report.cacdrs == expected["cacdrs"]
    assert set(report.referenced_sop_instance_uids) == {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in site.main.files
    }


def test_a_series_split_over_two_associations_gives_one_job(site: Site) -> None:
    ids = site.split.instance_ids
    half = len(ids) // 2
    site.orthanc.store("NODE", ids[:half])
    time.sleep(SPLIT_PAUSE_S)
    site.orthanc.store("NODE", ids[half:])
    job_id = done_job(site.node, site.split.series_uid)
    assert jobs_of(site.node, site.split.series_uid) == [(job_id, "done")]
    organs_job = done_job(site.node, site.split.series_uid, 600, pipeline="organs")
    assert jobs_of(site.node, site.split.series_uid, "organs") == [(organs_job, "done")]
    ((count,),) = site.node.query(
        "SELECT instance_count FROM series WHERE series_uid = ?", site.split.series_uid
    )
    assert count == len(ids)
    job = site.node.cli_json("jobs", "show", str(job_id))
    assert not any(e["kind"] == "series.reopened" for e in job["series_events"])


def test_the_same_series_sent_twice_gives_no_second_result_set(site: Site) -> None:
    before = results_in_orthanc(site, site.main)
    answer = site.orthanc.store("NODE", [site.main.study_id])
    assert answer.get("FailedInstancesCount", 0) == 0
    # Longer than completion + a scheduler pass: a second job would have been made by now.
    time.sleep(COMPLETE_AFTER_S + 3)
    assert [state for _, state in jobs_of(site.node, site.main.series_uid)] == ["done"]
    assert [state for _, state in jobs_of(site.node, site.main.series_uid, "organs")] == ["done"]
    ((duplicates,),) = site.node.query(
        "SELECT COUNT(*) FROM events JOIN series ON series.id = events.series_id "
        "WHERE series.series_uid = ? AND events.kind = 'instance.duplicate'",
        site.main.series_uid,
    )
    assert duplicates == len(site.main.files)
    assert sorted(i["id"] for i in results_in_orthanc(site, site.main)) == sorted(
        i["id"] for i in before
    )


def test_the_job_log_shows_each_stage_with_its_time(site: Site) -> None:
    ((job_id, _),) = jobs_of(site.node, site.main.series_uid)
    job = site.node.cli_json("jobs", "show", str(job_id))
    stages = job["stages"]
    assert [s["state"] for s in stages] == ["queued", "running", "sending", "done"]
    assert all(isinstance(s["seconds"], float) for s in stages[:-1])
    messages = {e["kind"]: e["message"] for e in job["events"]}
    assert messages["job.stage.volume"].endswith(" s")
    assert " s" in messages["job.stage.score"] and " s" in messages["job.stage.results"]
    assert "stored at ORTHANC@" in messages["delivery.sent"]
    table = site.node.cli("jobs", "show", str(job_id)).stdout
    for text in ("Time in each state", "job.stage.volume", "delivery.sent", "Outputs"):
        assert text in table


def test_the_organ_seg_comes_back_coded_on_the_source_frames(site: Site) -> None:
    """The organs job's SEG in Orthanc: series 9004 in the source study, SNOMED CT coded
    segments named in plain words, every frame referring to an instance of the source series."""
    from node.results import codes as rc
    from node.results.organ_seg import ORGAN_SEG_SERIES_NUMBER

    ((organs_job, state),) = jobs_of(site.node, site.main.series_uid, "organs")
    assert state == "done"
    ((seg_uid,),) = site.node.query(
        "SELECT sop_instance_uid FROM results WHERE job_id = ?", organs_job
    )
    found = [i for i in results_in_orthanc(site, site.main) if i["sop_uid"] == seg_uid]
    assert len(found) == 1
    ds = pydicom.dcmread(io.BytesIO(site.orthanc.file(found[0]["id"])))
    assert ds.SOPClassUID == SEG_CLASS and ds.SeriesNumber == ORGAN_SEG_SERIES_NUMBER
    assert ds.Manufacturer == "ctnode" and ds.SegmentationType == "BINARY"
    labels = [item.SegmentLabel for item in ds.SegmentSequence]
    assert "Heart" in labels
    if site.organ_model == STANDIN_NAME:  # every voxel is heart
        assert labels == ["Heart"]
    heart = ds.SegmentSequence[labels.index("Heart")]
    assert heart.SegmentedPropertyTypeCodeSequence[0].CodeValue == "80891009"
    assert rc.same_code(heart.SegmentedPropertyCategoryCodeSequence[0], rc.ANATOMICAL_STRUCTURE)
    algorithm = heart.SegmentationAlgorithmIdentificationSequence[0]
    if site.organ_model == STANDIN_NAME:
        assert algorithm.AlgorithmName == STANDIN_NAME
    source_uids = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in site.main.files
    }
    referenced = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in ds.PerFrameFunctionalGroupsSequence
    }
    assert referenced and referenced <= source_uids
    job = site.node.cli_json("jobs", "show", str(organs_job))
    messages = {e["kind"]: e["message"] for e in job["events"]}
    for stage in ("volume", "segment", "results"):
        assert " s" in messages[f"job.stage.{stage}"]
    assert " s" in messages["job.stage.segment"] and "heart" in messages["job.stage.segment"]
