"""Every Specific Character Set of PS3.3 C.12.1.1.2 through the result builders.

A small phantom series is written once; for each defined term (alone, with code extensions,
multi-valued, with an empty first value) its instances get a patient name and a study
description in that character set, are encoded and parsed again (as the worker reads them from
the spool), and the SR, SEG and Secondary Capture are built from them. Each object must pass
dciodvfy, carry the source's character set (all of these are standard and hold the text), and
give back the same patient name. The dciodvfy of Debian 12 does not know a few defined terms
(DCIODVFY_GAPS) and reports their non-ASCII text as invalid in the source CT just the same;
there the result may have those errors and no other. The whole node runs three of these sets end to end in
tests/integration/test_receive_checks.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from models.calcium.result import CalciumResult
from models.labels import ARTERIES
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.dicom import write_ct_series
from models.phantoms.writer import series_meta
from node.results.capture import build_overlay_capture, render_overlay
from node.results.seg import build_feedback_seg
from node.results.source import SourceSeriesError
from node.results.sr import build_calcium_sr
from node.volume.assembly import assemble
from node.volume.stacks import find_stacks
from tests.tools import dciodvfy_errors

LATIN = {
    "100": "Müller^Jürgen",
    "101": "Dvořák^Antonín",
    "109": "Borġ^Ġużeppi",
    "110": "Bērziņš^Jānis",
    "144": "Иванов^Иван",
    "127": "قباني^نزار",
    "126": "Διονυσιος^Ανδρεας",
    "138": "שרון^דבורה",
    "148": "Çağlar^Şükrü",
    "203": "Bœuf^Zoë",
    "13": "ﾔﾏﾀﾞ^ﾀﾛｳ",
    "166": "ประเสริฐ^สมชาย",
}
CASES: list[tuple[str | list[str] | None, str]] = [
    (None, "SMITH^JOHN"),
    *((f"ISO_IR {n}", name) for n, name in LATIN.items()),
    ("ISO 2022 IR 6", "SMITH^JOHN"),
    *((f"ISO 2022 IR {n}", name) for n, name in LATIN.items()),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    (["", "ISO 2022 IR 87", "ISO 2022 IR 159"], "Mori^Ougai=森^鴎外=もり^おうがい"),
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
    (["", "ISO 2022 IR 58"], "Zhang^Sanfeng=张^三丰"),
    (["ISO 2022 IR 100", "ISO 2022 IR 144"], "Müller^Иван"),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東=ワン^シャオドン"),
    ("GB18030", "Wang^XiaoDong=王^小东"),
    ("GBK", "Wang^XiaoDong=王^小东"),
]


# Terms the dicom3tools of Debian 12 do not know: it checks their text as the default repertoire.
DCIODVFY_GAPS = {"ISO_IR 203", "ISO_IR 13", "GBK"} | {f"ISO 2022 IR {n}" for n in LATIN}
REPERTOIRE_ERRORS = ("Character invalid for character repertoire", "invalid data values for")


def _case_id(case: tuple) -> str:
    value = case[0]
    return "\\".join(value) if isinstance(value, list) else str(value)


class Series:
    def __init__(self, root: Path) -> None:
        case = generate_case(8, 3, CaseOptions(matrix=64, protocol=(3.0, 3.0), n_slices=8))
        paths = write_ct_series(
            case.grid.to_image(case.image), series_meta(case, "charset", rle=False), root
        )
        stack = find_stacks(root).stacks[0]
        self.ct = sitk.Cast(assemble(stack).image, sitk.sitkFloat32)
        self.datasets = [pydicom.dcmread(p) for p in paths]
        self.result = _result(self.ct, case.patient["heart_centre_mm"])
        self.overlay = render_overlay(self.ct, self.result)  # the picture is the same for all

    def in_character_set(self, value, name: str) -> list[pydicom.Dataset]:
        """The instances re-encoded in the character set, parsed again from bytes."""
        out = []
        for original in self.datasets:
            ds = pydicom.Dataset(original)
            ds.file_meta = original.file_meta
            if value is None:
                del ds.SpecificCharacterSet
            else:
                ds.SpecificCharacterSet = value
            ds.PatientName = name
            # pydicom writes a value in ISO_IR 13 only if it is all katakana or all romaji
            ds.StudyDescription = name.replace("^", "").replace("=", "")
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            out.append(pydicom.dcmread(io.BytesIO(buffer.getvalue())))
        return out


def _result(ct: sitk.Image, heart_centre_mm) -> CalciumResult:
    """A result with a small feedback region per artery, so the SEG has segments."""
    feedback = {}
    for index, artery in enumerate(ARTERIES):
        array = np.zeros(ct.GetSize()[::-1], np.float32)
        array[2:4, 20 + 8 * index : 23 + 8 * index, 30:33] = 5.0
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(ct)
        feedback[artery] = image
    return CalciumResult(
        agatston_total=123.4,
        agatston_per_artery={"LAD": 100.0, "LCX": 20.0, "RCA": 3.4},
        category=4,
        cacdrs="A2",
        flags=[],
        heart_centre_mm=list(heart_centre_mm),
        transform={},
        feedback=feedback,
        model="ctnode-calcium test-1",
    )


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    return Series(tmp_path_factory.mktemp("charset_series"))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_results_carry_a_valid_character_set(series: Series, case, tmp_path: Path) -> None:
    value, name = case
    source = series.in_character_set(value, name)
    assert str(source[0].PatientName) == name  # pydicom encodes and decodes this set
    built = {
        "sr": build_calcium_sr(source, series.result),
        "seg": build_feedback_seg(source, series.ct, series.result),
        "sc": build_overlay_capture(source, series.ct, series.result, overlay=series.overlay),
    }
    source_errors: list[str] = []
    if isinstance(value, str) and value in DCIODVFY_GAPS:
        source[0].save_as(tmp_path / "ct.dcm", enforce_file_format=True)
        source_errors = dciodvfy_errors(tmp_path / "ct.dcm")
        assert source_errors and all(
            any(e in line for e in REPERTOIRE_ERRORS) for line in source_errors
        )
    for kind, dataset in built.items():
        path = tmp_path / f"{kind}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        assert set(dciodvfy_errors(path)) <= set(source_errors), kind
        back = pydicom.dcmread(path)
        assert back.get("SpecificCharacterSet") == value, kind
        assert str(back.PatientName) == name, kind
        assert back.StudyDescription == source[0].StudyDescription, kind


def test_a_set_outside_the_standard_becomes_utf8(series: Series, tmp_path: Path) -> None:
    """Seen in the wild: a first value without code extensions before a multi-byte one."""
    source = series.in_character_set(["ISO_IR 100", "ISO 2022 IR 87"], "Müller^Jürgen")
    sr = build_calcium_sr(source, series.result)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    back = pydicom.dcmread(tmp_path / "sr.dcm")
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == "Müller^Jürgen"


def test_an_unknown_set_is_a_source_series_error(series: Series) -> None:
    source = series.in_character_set("ISO_IR 999", "SMITH^JOHN")
    with pytest.raises(SourceSeriesError, match="'ISO_IR 999' is not a defined term"):
        build_calcium_sr(source, series.result)
