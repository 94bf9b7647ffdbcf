"""Spool: only valid UIDs become paths; writes are atomic and leave no partial files."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.spool import (
    InvalidUIDError,
    instance_path,
    is_valid_uid,
    remove_stale_temp_files,
    validate_uid,
    write_durably,
)

STUDY, SERIES, SOP = "1.2.840.10008.1", "1.2.3.4", "1.2.3.4.0.5"


@pytest.mark.parametrize("uid", ["0", "1.2.840.10008.5.1.4.1.1.2", "1.0.3", "2." + "1" * 62])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert validate_uid(uid, "X") == uid


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        (None, "missing"),
        ("", "missing"),
        (["1.2", "1.3"], "not a single UID"),
        ("1.02.3", "not a valid UID"),  # leading zero in a component
        ("1..2", "not a valid UID"),
        ("1.2.", "not a valid UID"),
        (".1.2", "not a valid UID"),
        ("1.2 ", "not a valid UID"),
        ("1.2\x00", "not a valid UID"),
        ("../../etc/passwd", "not a valid UID"),
        ("1/2", "not a valid UID"),
        ("2." + "1" * 63, "longer than 64"),
    ],
)
def test_invalid_uids_are_refused_with_the_attribute_name(uid: object, why: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUIDError, match=f"SeriesInstanceUID.*{why}|{why}"):
        validate_uid(uid, "SeriesInstanceUID")


def test_invalid_uid_value_is_not_repeated_in_the_message() -> None:
    with pytest.raises(InvalidUIDError) as raised:
        validate_uid("DOE^JOHN", "StudyInstanceUID")
    assert "DOE" not in str(raised.value)


def test_instance_path_layout_and_traversal(tmp_path: Path) -> None:
    path = instance_path(tmp_path, STUDY, SERIES, SOP)
    assert path == tmp_path / STUDY / SERIES / f"{SOP}.dcm"
    with pytest.raises(InvalidUIDError):
        instance_path(tmp_path, STUDY, "..", SOP)
    with pytest.raises(InvalidUIDError):
        instance_path(tmp_path, "/tmp", SERIES, SOP)


def test_write_durably_creates_folders_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = instance_path(tmp_path, STUDY, SERIES, SOP)
    assert write_durably(path, [b"abc", b"def"]) == 6
    assert path.read_bytes() == b"abcdef"
    assert write_durably(path, [b"new"]) == 3
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = instance_path(tmp_path, STUDY, SERIES, SOP)

    def chunks():
        yield b"half"
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        write_durably(path, chunks())
    assert list(path.parent.iterdir()) == []


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / STUDY / SERIES
    folder.mkdir(parents=True)
    (folder / ".incoming-abc.tmp").write_bytes(b"partial")
    (folder / f"{SOP}.dcm").write_bytes(b"kept")
    assert remove_stale_temp_files(tmp_path) == 1
    assert [p.name for p in folder.iterdir()] == [f"{SOP}.dcm"]
    assert remove_stale_temp_files(tmp_path / "absent") == 0
