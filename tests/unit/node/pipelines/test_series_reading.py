"""node.pipelines.series_reading.read_source: the job reads the database's file list, and fails the
series clearly on a file it cannot use (files can reach the spool other than through the
receiver's checks: the start-up recovery, a restore, a disk that cut a file short)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from node.config import load_settings
from node.pipelines.series_reading import BadSeriesError, SeriesFiles, read_source
from tests.synthetic_dicom import hu_volume, write_series

SLICES = 45  # 2.5 mm apart: 110 mm, enough for the calcium selection


@pytest.fixture
def series(tmp_path: Path) -> tuple[SeriesFiles, list[Path]]:
    folder = tmp_path / "spool" / "study" / "series"
    paths = write_series(folder, hu_volume(SLICES))
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
    return SeriesFiles(uid, folder, paths), paths


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(environ={"CTNODE_STORAGE__SPOOL_DIR": str(tmp_path / "spool")})


def test_a_stray_file_in_the_folder_is_not_read(series, settings) -> None:
    files, paths = series
    shutil.copy(paths[0], files.folder / "stray-copy.dcm")  # the same instance again
    (files.folder / "notes.txt").write_text("not DICOM")
    source, ct, notes = read_source(files, settings)
    assert len(source) == SLICES and ct.GetSize()[2] == SLICES
    assert "left out" not in notes


def test_pixel_data_that_contradicts_rows_and_columns_fails_the_series(series, settings) -> None:
    files, paths = series
    ds = pydicom.dcmread(paths[7])
    ds.Rows, ds.Columns = 16, 12  # a quarter of the values it carries
    ds.save_as(paths[7], enforce_file_format=True)
    with pytest.raises(BadSeriesError, match=f"{paths[7].name} cannot be used: pixel data 1536 "
                       "bytes, not 384 for 16x12 at 16 bits"):  # fmt: skip
        read_source(files, settings)


def test_a_file_cut_short_fails_the_series(series, settings) -> None:
    files, paths = series
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[:-100])
    with pytest.raises(BadSeriesError, match="pixel data 1436 bytes, not 1536"):
        read_source(files, settings)


def test_a_missing_file_fails_the_series(series, settings) -> None:
    files, paths = series
    paths[5].unlink()
    with pytest.raises(BadSeriesError, match=f"{paths[5].name} cannot be used: file missing"):
        read_source(files, settings)


def test_an_unknown_character_set_is_a_bad_series(series, settings) -> None:
    files, paths = series
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 999"
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(BadSeriesError, match="'ISO_IR 999' is not a defined term"):
        read_source(files, settings)
