"""Specific Character Set (0008,0005): which values the node accepts, and what its results carry.

PS3.3 C.12.1.1.2 defines the terms: single-byte without code extensions (Table C.12-2),
single-byte with code extensions (C.12-3), multi-byte with code extensions (C.12-4) and
multi-byte without code extensions (C.12-5). A multi-valued set uses only code-extension terms,
and its first value may be empty (then it is ISO 2022 IR 6, the default repertoire); the terms
of C.12-5 stand alone.

The receiver refuses an instance whose set holds a value that is neither a defined term nor a
spelling pydicom corrects unambiguously ("ISO IR 100" for "ISO_IR 100"): the node could not
tell which characters its text holds, and the patient's name would go into the results
garbled. A job re-checks the same rule for files that reach the spool another way.

Results (SR, SEG, Secondary Capture) copy the patient and study text of the source; they carry
the source's set where it is standard and can encode everything they hold, otherwise UTF-8
(ISO_IR 192), which encodes any text. highdicom's own check of the value is stricter than
PS3.3 (no empty first value, no single code-extension term, IR 149 unknown), so the builders
let highdicom write none and set it here afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom.charset
from pydicom.charset import _encode_string_impl, _encode_string_parts
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

# PS3.3 Table C.12-2 (the default repertoire is the absent or empty value).
SINGLE_BYTE = frozenset(
    f"ISO_IR {n}" for n in (100, 101, 109, 110, 144, 127, 126, 138, 148, 203, 13, 166)
)
# Table C.12-3.
SINGLE_BYTE_CODE_EXTENSIONS = frozenset(
    f"ISO 2022 IR {n}" for n in (6, 100, 101, 109, 110, 144, 127, 126, 138, 148, 203, 13, 166)
)
# Table C.12-4.
MULTI_BYTE_CODE_EXTENSIONS = frozenset(f"ISO 2022 IR {n}" for n in (87, 159, 149, 58))
# Table C.12-5: each only as the one value.
MULTI_BYTE = frozenset({"ISO_IR 192", "GB18030", "GBK"})
DEFINED_TERMS = SINGLE_BYTE | SINGLE_BYTE_CODE_EXTENSIONS | MULTI_BYTE_CODE_EXTENSIONS | MULTI_BYTE
UTF8 = "ISO_IR 192"
# The shape of a term ("ISO_IR 100", "ISO 2022 IR 87", misspelt ones too): only such values
# are repeated in messages; anything else in the element could be any text.
TERM_SHAPE = re.compile(r"ISO[ _-]?(2022[ _-]?)?IR[ _-]?[0-9]{1,3}|GB18030|GBK")

# pydicom (3.0) has no codec for Latin alphabet No. 9 and would read it as Latin-1 (eight
# characters differ, the euro sign among them); its escape sequence is ESC 2/13 6/2 (PS3.3
# Table C.12-3).
_MISSING_IN_PYDICOM = {"ISO_IR 203": "iso8859_15", "ISO 2022 IR 203": "iso8859_15"}


def _fix_pydicom_tables() -> None:
    """Two gaps of pydicom 3.0's character set tables, filled once at import (both checked by
    tests/unit/node/test_character_sets.py, so a pydicom that fixes them shows up there)."""
    for term, codec in _MISSING_IN_PYDICOM.items():
        pydicom.charset.python_encoding.setdefault(term, codec)
    pydicom.charset.CODES_TO_ENCODINGS.setdefault(b"\x1b-b", "iso8859_15")
    pydicom.charset.ENCODINGS_TO_CODES.setdefault("iso8859_15", b"\x1b-b")
    # GB2312 (ISO 2022 IR 58) is listed as a codec that handles its own escape sequences, which
    # Python's gb2312 does not: pydicom reads "ESC $ ) A" into the text and writes none. Off
    # that list, pydicom strips and writes the sequence as it does for the other G1 sets.
    pydicom.charset.handled_encodings = tuple(
        name for name in pydicom.charset.handled_encodings if name != "iso_ir_58"
    )


_fix_pydicom_tables()


class CharacterSetError(ValueError):
    """A Specific Character Set the node cannot interpret; the message quotes no text value."""


@dataclass(frozen=True)
class CharacterSet:
    """A dataset's Specific Character Set, each value as its defined term."""

    terms: tuple[str, ...]  # () for the default repertoire; a multi-valued set may start with ""

    @property
    def is_standard(self) -> bool:
        """Whether the combination follows PS3.3 C.12.1.1.2 (each term alone is defined)."""
        if len(self.terms) <= 1:
            return not self.terms or self.terms[0] not in MULTI_BYTE_CODE_EXTENSIONS
        first, rest = self.terms[0], self.terms[1:]
        extensions = SINGLE_BYTE_CODE_EXTENSIONS | MULTI_BYTE_CODE_EXTENSIONS
        return first in SINGLE_BYTE_CODE_EXTENSIONS | {""} and all(t in extensions for t in rest)

    @property
    def value(self) -> str | list[str] | None:
        """The value for a dataset's SpecificCharacterSet (None: leave it out)."""
        if not self.terms:
            return None
        return self.terms[0] if len(self.terms) == 1 else list(self.terms)

    def python_codecs(self) -> list[str]:
        if not self.terms:
            return ["ascii"]  # the default repertoire (pydicom reads it as Latin-1, leniently)
        return [
            "ascii" if term in ("", "ISO 2022 IR 6") else pydicom.charset.python_encoding[term]
            for term in self.terms
        ]

    def can_encode(self, text: str, *, person_name: bool = False) -> bool:
        """Whether pydicom writes `text` in this set without replacement characters (a person
        name is encoded group by group, as pydicom does)."""
        parts = re.split(r"[=^]", text) if person_name else [text]
        codec_names = self.python_codecs()
        return all(_pydicom_encodes(part, codec_names) for part in parts if part)


def _pydicom_encodes(value: str, codec_names: list[str]) -> bool:
    """The calls pydicom's writer makes (pydicom.charset.encode_string), made strict: where
    they fail, pydicom would write "?" instead of the characters and only warn. Its encoders
    are stricter than Python's codecs (ISO_IR 13 alone cannot mix katakana and romaji in
    one value, for one), so they are asked, not the codecs."""
    for name in codec_names:
        try:
            _encode_string_impl(value, name)
            return True
        except UnicodeError:
            continue
    if len(codec_names) > 1:
        try:
            _encode_string_parts(value, codec_names)
            return True
        except (UnicodeError, ValueError):
            return False
    return False


def describe_value(value: str) -> str:
    """A value for a message: quoted when it has the shape of a term, otherwise not repeated
    (a malformed value could be any text, patient data included)."""
    return repr(value) if TERM_SHAPE.fullmatch(value) else "(a value that is not a term)"


def _defined_term(raw: str) -> str:
    """The defined term a value stands for; CharacterSetError if none."""
    value = raw.strip(" \x00")
    if value in DEFINED_TERMS or value == "":
        return value
    if value == "ISO_IR 6":  # not in PS3.3, but written by some systems for the default
        return ""
    # The spelling slips pydicom corrects: a missing underscore in ISO_IR, other separators
    # in ISO 2022 IR.
    if re.match(r"^ISO[^_]IR", value):
        patched = "ISO_IR" + value[6:]
    elif re.match(r"^(?=ISO.2022.IR.)(?!ISO 2022 IR )", value):
        patched = "ISO 2022 IR " + value[12:]
    else:
        patched = ""
    if patched in DEFINED_TERMS:
        return patched
    raise CharacterSetError(
        f"Specific Character Set value {describe_value(value)} is not a defined term "
        "of PS3.3 C.12.1.1.2"
    )


def character_set_of(dataset: Dataset) -> CharacterSet:
    """The dataset's Specific Character Set as defined terms; CharacterSetError when a value is
    not one (or the element cannot be read)."""
    element = dataset.get_item(0x00080005)
    raw = None if element is None else element.value
    if raw is None or raw == "" or raw == b"":
        return CharacterSet(())
    if isinstance(raw, bytes):  # still as received: cheaper to split here than to convert
        values = raw.decode("latin-1").split("\\")
    else:
        values = [raw] if isinstance(raw, str) else [str(v) for v in raw]
    terms = tuple(_defined_term(v) for v in values)
    if len(terms) > 1 and any(term in MULTI_BYTE for term in terms):
        raise CharacterSetError(
            "Specific Character Set combines ISO_IR 192, GB18030 or GBK with other values "
            "(PS3.3 C.12.1.1.2: they stand alone)"
        )
    if len(terms) == 1 and terms[0] == "":
        return CharacterSet(())
    return CharacterSet(terms)


def check_character_set(dataset: Dataset) -> None:
    """CharacterSetError unless the dataset's Specific Character Set can be interpreted."""
    character_set_of(dataset)


def _text_values(dataset: Dataset) -> Iterator[tuple[str, bool]]:
    """Every character-string value in the dataset, its sequences included, and whether it
    is a person name."""
    for element in dataset.iterall():
        if element.VR not in ("SH", "LO", "ST", "LT", "UT", "UC", "PN"):
            continue
        values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
        for value in values:
            if isinstance(value, PersonName | str):
                yield str(value), element.VR == "PN"


def set_result_character_set(result: Dataset, source: Dataset) -> None:
    """Give a result object the source's character set when that is standard and encodes all
    of the result's text, otherwise UTF-8 (see the module docstring)."""
    chosen = character_set_of(source)  # check_series has refused one that cannot be read
    texts = _text_values(result)
    if not chosen.is_standard or not all(chosen.can_encode(t, person_name=pn) for t, pn in texts):
        chosen = CharacterSet((UTF8,))
    if chosen.value is None:
        if "SpecificCharacterSet" in result:
            del result.SpecificCharacterSet
    else:
        result.SpecificCharacterSet = chosen.value
