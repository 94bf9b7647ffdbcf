"""Odd inputs at a real `ctnode serve` (subprocess, calcium model, no destinations): character
sets end to end, pixel data that contradicts its header, instances cut short, a stray file in
a series folder, and values a bad request carries kept out of the node's log.

Senders are DCMTK's storescu, and pynetdicom where DCMTK will not send the malformed input
(a file cut short, a request whose Affected SOP Instance UID is not a UID). One node serves the
whole module; tests run in file order.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from node.pipelines.outbox import job_folder
from node.scu import nodelay_handlers
from node.spool import instance_relative_path
from tests.nodeproc import DCMTK_ENV, NodeProcess, free_port, wait_for
from tests.tools import REPO, dciodvfy_errors, require_tool

SLICES = 40  # 3 mm apart: 117 mm, enough for series selection
MARKER = "424242"  # digits a sender might put into a UID; must never reach the log


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("phantom")
    subprocess.run(
        [sys.executable, "-m", "models.phantoms", "--out", str(folder), "--n", "1"]
        + ["--seed", "21", "--dicom", "--matrix", "96", "--protocol", "3/3"]
        + ["--slices", str(SLICES)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return sorted((folder / "case_0000" / "dicom").glob("*.dcm"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[NodeProcess]:
    require_tool("storescu", "dcmtk")
    running = NodeProcess(
        tmp_path_factory.mktemp("node"),
        free_port(),
        sections={
            "node": {"accept_unknown_peers": True},
            "series": {"complete_after_s": 1.5, "check_interval_s": 0.5},
            "calcium": {"weights_dir": str(weights), "device": "cpu"},
        },
        lists={"routes": [{"name": "calcium", "pipeline": "calcium"}]},
    ).start()
    yield running
    assert running.stop() == 0, running.log_text()[-3000:]


def storescu(node: NodeProcess, files: list[Path], verbosity: str = "-v") -> str:
    """storescu's output (it stops at the first failure status)."""
    proc = subprocess.run(
        ["storescu", verbosity, "-aec", "CTNODE", "127.0.0.1", str(node.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env=DCMTK_ENV,
        check=False,
    )
    return proc.stdout + proc.stderr


def rewritten(phantom: list[Path], folder: Path, **elements) -> list[Path]:
    """The phantom as a new series (new series and instance UIDs) with `elements` set."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    paths = []
    for index, source in enumerate(phantom):
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for keyword, value in elements.items():
            setattr(ds, keyword, value)
        paths.append(folder / f"{index:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def final_job(node: NodeProcess, series_uid: str) -> tuple[int, str, str | None]:
    def finished():
        rows = node.query(
            "SELECT jobs.id, jobs.state, jobs.error FROM jobs JOIN series "
            "ON series.id = jobs.series_id WHERE series.series_uid = ? ORDER BY jobs.id",
            series_uid,
        )
        return rows[-1] if rows and rows[-1][1] in ("done", "failed") else None

    return wait_for(finished, 180, f"a finished job for series {series_uid}")


def refusals(node: NodeProcess) -> list[str]:
    return [r[0] for r in node.query("SELECT message FROM events WHERE kind = 'instance.rejected'")]


CHARACTER_SETS = [
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # the case
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東"),
]


def test_character_sets_end_to_end_and_a_stray_file_is_ignored(
    node: NodeProcess, phantom: list[Path], tmp_path: Path
) -> None:
    sent = {}
    for index, (value, name) in enumerate(CHARACTER_SETS):
        files = rewritten(
            phantom, tmp_path / str(index), SpecificCharacterSet=value, PatientName=name
        )
        first = pydicom.dcmread(files[0])
        if index == 0:
            # A stray file in the series' spool folder (a copy of an instance under another
            # name), there before the series arrives: the job reads the database's list.
            relative = instance_relative_path(
                first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
            )
            stray = node.folder / "spool" / relative.parent / "stray-copy.dcm"
            stray.parent.mkdir(parents=True)
            stray.write_bytes(files[0].read_bytes())
        output = storescu(node, files)
        assert "Received Store Response (Success)" in output and "Error" not in output, output
        sent[first.SeriesInstanceUID] = (
            value,
            name,
            {pydicom.dcmread(f).SOPInstanceUID for f in files},
        )
    for series_uid, (value, name, instance_uids) in sent.items():
        job_id, state, reason = final_job(node, series_uid)
        assert state == "done", reason
        for kind in ("sr", "capture"):
            path = node.folder / "outbox" / job_folder(job_id) / f"{kind}.dcm"
            assert dciodvfy_errors(path) == [], (value, kind)
            result = pydicom.dcmread(path)
            assert result.SpecificCharacterSet == value and str(result.PatientName) == name
            if kind == "sr":
                referenced = {
                    item.ReferencedSOPInstanceUID
                    for study in result.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence
                    for item in series.ReferencedSOPSequence
                }
                assert referenced == instance_uids


def test_an_unknown_character_set_is_refused_at_the_door(
    node: NodeProcess, phantom: list[Path], tmp_path: Path
) -> None:
    files = rewritten(phantom[:1], tmp_path, SpecificCharacterSet="ISO_IR 999")
    output = storescu(node, files)
    assert "Received Store Response (Error: CannotUnderstand)" in output, output
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    assert not node.query("SELECT id FROM series WHERE series_uid = ?", uid)
    assert any("'ISO_IR 999' is not a defined term" in r for r in refusals(node))


def test_pixel_data_larger_than_rows_and_columns_is_refused(
    node: NodeProcess, phantom: list[Path], tmp_path: Path
) -> None:
    """The issue's probe: the header says half the matrix, the values are the full one."""
    files = rewritten(phantom[:1], tmp_path, Rows=48, Columns=48)
    output = storescu(node, files, "-d")  # -d: the response's elements, Error Comment too
    assert "0xa900" in output.lower(), output
    assert "LO [pixel data 18432 bytes, not 4608 for 48x48 at 16 bits]" in output
    ds = pydicom.dcmread(files[0])
    assert not (node.folder / "spool" / ds.StudyInstanceUID / ds.SeriesInstanceUID).exists()
    assert any("pixel data 18432 bytes, not 4608" in r for r in refusals(node))


def _pynetdicom_store(node: NodeProcess, dataset_or_path) -> int | None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage)
    association = ae.associate(
        "127.0.0.1", node.port, ae_title="CTNODE", evt_handlers=nodelay_handlers()
    )
    assert association.is_established
    try:
        status = association.send_c_store(dataset_or_path)
        return int(status.Status) if "Status" in status else None
    finally:
        if association.is_established:
            association.release()


def test_an_instance_cut_short_inside_its_pixel_data_is_refused(
    node: NodeProcess, phantom: list[Path], tmp_path: Path
) -> None:
    [path] = rewritten(phantom[:1], tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 1000])
    assert _pynetdicom_store(node, cut) == 0xA900
    # pynetdicom sends the 17432 bytes that are left with their own length (a cut-off
    # element length is covered in tests/unit/node/test_pixel_checks.py)
    assert any("pixel data 17432 bytes, not 18432 for 96x96" in r for r in refusals(node))


def test_bad_request_values_stay_out_of_the_log(
    node: NodeProcess, phantom: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # This test process's pynetdicom would refuse to send what a careless sender sends.
    monkeypatch.setitem(_config.VALIDATORS, "UI", lambda value: (True, ""))
    before = node.log_text()
    for uid in (f"1.2.840.0{MARKER}", f"1.2.840.X{MARKER}X"):  # non-conformant, invalid
        ds = pydicom.dcmread(phantom[0])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        status = _pynetdicom_store(node, ds)
        assert status != 0x0000  # refused, or the association aborted (status None)
    ds = pydicom.dcmread(phantom[0])
    ds.SOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = f"X{MARKER}"  # an element value pydicom warns about
    assert _pynetdicom_store(node, ds) == 0xC000
    wait_for(lambda: len(node.log_text()) > len(before), 10, "the node to log the refusals")
    log = node.log_text()
    assert "pynetdicom" in log[len(before) :]  # pynetdicom did complain, without the values
    assert MARKER not in log
