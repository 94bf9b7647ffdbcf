"""node.character_sets: which Specific Character Set values are accepted, what results carry."""

from __future__ import annotations

import io
import struct

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from node.character_sets import (
    DEFINED_TERMS,
    UTF8,
    CharacterSet,
    CharacterSetError,
    character_set_of,
    set_result_character_set,
)


def _with(value) -> Dataset:
    ds = Dataset()
    if value is not None:
        ds.SpecificCharacterSet = value
    return ds


def test_every_defined_term_is_accepted_alone() -> None:
    assert len(DEFINED_TERMS) == 12 + 13 + 4 + 3  # PS3.3 Tables C.12-2 to C.12-5
    for term in DEFINED_TERMS:
        assert character_set_of(_with(term)).terms == (term,)


@pytest.mark.parametrize(
    ("value", "terms", "standard"),
    [
        (None, (), True),
        ("", (), True),
        (["", "ISO 2022 IR 87"], ("", "ISO 2022 IR 87"), True),  # empty first value: IR 6
        (["ISO 2022 IR 13", "ISO 2022 IR 87"], ("ISO 2022 IR 13", "ISO 2022 IR 87"), True),
        ("ISO 2022 IR 100", ("ISO 2022 IR 100",), True),
        ("ISO_IR 100 ", ("ISO_IR 100",), True),  # CS values may be padded
        ("ISO IR 100", ("ISO_IR 100",), True),  # a slip pydicom corrects as well
        ("ISO-2022-IR-87", ("ISO 2022 IR 87",), False),  # alone, a multi-byte extension
        ("ISO_IR 6", (), True),
        (["ISO_IR 100", "ISO 2022 IR 87"], ("ISO_IR 100", "ISO 2022 IR 87"), False),
    ],
)
def test_values_map_to_defined_terms(value, terms: tuple, standard: bool) -> None:
    character_set = character_set_of(_with(value))
    assert character_set.terms == terms
    assert character_set.is_standard is standard


@pytest.mark.parametrize(
    ("raw", "terms"),
    [
        (b"\\ISO 2022 IR 87 ", ("", "ISO 2022 IR 87")),
        (b"ISO_IR 100\x00", ("ISO_IR 100",)),
        (b"ISO 2022 IR 13\\ISO 2022 IR 87", ("ISO 2022 IR 13", "ISO 2022 IR 87")),
    ],
)
def test_values_as_received(raw: bytes, terms: tuple) -> None:
    """The receiver reads the element before pydicom converts it."""
    ds = read_dataset(
        io.BytesIO(b"\x08\x00\x05\x00CS" + struct.pack("<H", len(raw)) + raw), False, True
    )
    assert isinstance(ds.get_item(0x00080005).value, bytes)
    assert character_set_of(ds).terms == terms


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ISO_IR 999", "'ISO_IR 999' is not a defined term"),
        ("utf-8", "not a term"),  # a Python codec name is no DICOM term
        ("DOE^JOHN", "not a term"),  # never repeated: it could be anything
        ("X424242", "not a term"),  # nor digits that are no term
        (["ISO_IR 192", "GB18030"], "stand alone"),
    ],
)
def test_unknown_values_are_refused_without_quoting_free_text(value, message: str) -> None:
    with pytest.raises(CharacterSetError, match=message) as error:
        character_set_of(_with(value))
    assert "DOE" not in str(error.value) and "424242" not in str(error.value)


def test_latin_9_is_read_and_written_with_its_own_codec() -> None:
    """pydicom 3.0 lacks ISO_IR 203 and would read the euro sign as Latin-1's currency sign."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 203"
    ds.StudyDescription = "Cœur 10€"
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    assert b"C\xbdur 10\xa4" in buffer.getvalue()
    assert dcmread(io.BytesIO(buffer.getvalue()), force=True).StudyDescription == "Cœur 10€"


def test_gb2312_escape_sequences_are_read_and_written() -> None:
    """pydicom 3.0 kept "ESC $ ) A" in the text it read and wrote GB2312 without it."""
    raw = Dataset()
    raw.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
    raw.add_new(0x00100010, "PN", b"Zhang^Sanfeng=\x1b$)A\xd5\xc5^\x1b$)A\xc8\xfd\xb7\xe1")
    raw.decode()
    assert str(raw.PatientName) == "Zhang^Sanfeng=张^三丰"
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
    ds.PatientName = "Zhang^Sanfeng=张^三丰"
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    assert b"Zhang^Sanfeng=\x1b$)A\xd5\xc5^\x1b$)A\xc8\xfd\xb7\xe1" in buffer.getvalue()


def test_result_keeps_a_standard_set_that_encodes_its_text() -> None:
    source, result = _with(["", "ISO 2022 IR 87"]), Dataset()
    result.PatientName = "Yamada^Tarou=山田^太郎"
    set_result_character_set(result, source)
    assert result.SpecificCharacterSet == ["", "ISO 2022 IR 87"]


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("ISO_IR 100", "Müller^Jürgen 山"),  # text the source's set cannot hold
        (["ISO_IR 100", "ISO 2022 IR 87"], "Müller"),  # a set outside PS3.3's rules
        ("ISO_IR 13", "山田"),  # JIS X 0201 has no kanji (Python's shift_jis has)
        ("ISO_IR 13", "ﾔﾏﾀﾞ ﾀﾛｳ"),  # pydicom cannot write katakana and romaji in one value
        (None, "Müller"),  # non-ASCII text where the source declared none
    ],
)
def test_result_falls_back_to_utf8(source, text: str) -> None:
    result = Dataset()
    result.StudyDescription = text
    set_result_character_set(result, _with(source))
    assert result.SpecificCharacterSet == UTF8


def test_a_katakana_name_keeps_iso_ir_13() -> None:
    result = Dataset()
    result.PatientName = "ﾔﾏﾀﾞ^ﾀﾛｳ"  # written group by group: each all katakana
    set_result_character_set(result, _with("ISO_IR 13"))
    assert result.SpecificCharacterSet == "ISO_IR 13"


def test_result_without_a_set_for_ascii_text() -> None:
    result = _with("ISO_IR 100")  # highdicom may have written one; the source has none
    result.PatientName = "SMITH^JOHN"
    set_result_character_set(result, _with(None))
    assert "SpecificCharacterSet" not in result


def test_can_encode_with_code_extensions_switches_sets() -> None:
    japanese = CharacterSet(("ISO 2022 IR 13", "ISO 2022 IR 87"))
    assert japanese.can_encode("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎", person_name=True)
    assert not japanese.can_encode("Müller")
