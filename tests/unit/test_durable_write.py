"""fsutil.durable_write: the one way hadr writes a local file whole (temp + fsync + rename + dir fsync)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from hadr_backup.errors import RepositoryWriteFailed
from hadr_backup.fsutil import TEMP_NAME, durable_write, os_faults_as, temp_name


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_replaces_a_file_whole_from_bytes_or_chunks(tmp_path: Path) -> None:
    target = tmp_path / "state"
    assert durable_write(target, b"old") == 3
    assert durable_write(target, [b"n", b"", bytearray(b"ew"), memoryview(b" content")]) == 11
    assert target.read_bytes() == b"new content"
    assert names(tmp_path) == ["state"]


def test_an_error_while_iterating_the_data_keeps_the_old_content_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "segment"
    target.write_bytes(b"old")

    def refused():
        yield b"half of the new content"
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum mismatch"):
        durable_write(target, refused())
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["segment"]


def test_exclusive_creates_or_raises_file_exists_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "key"
    assert durable_write(target, b"first", exclusive=True) == 5
    with pytest.raises(FileExistsError):
        durable_write(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert names(tmp_path) == ["key"]


def test_mode_is_exact_whatever_the_umask_and_none_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        durable_write(tmp_path / "exact", b"x", mode=0o644)
        durable_write(tmp_path / "umask", b"x", mode=None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "exact").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "umask").stat().st_mode) == 0o600
    durable_write(tmp_path / "secret", b"x")
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600  # the default


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_owner_is_given_to_the_file(tmp_path: Path) -> None:
    durable_write(tmp_path / "owned", b"x", owner=(65534, 65534))
    st = (tmp_path / "owned").stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_the_guard_turns_the_helpers_own_os_errors_into_the_callers_error(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder" / "object"

    def guard():
        return os_faults_as(RepositoryWriteFailed, f"cannot write {missing}")

    with pytest.raises(RepositoryWriteFailed, match="cannot write .*: No such file or directory"):
        durable_write(missing, b"x", guard=guard)

    def unreadable_source():
        yield b"x"
        raise OSError(errno.EIO, "Input/output error")  # the source's fault, not the target's

    with pytest.raises(OSError, match="Input/output error") as raised:
        durable_write(tmp_path / "object", unreadable_source(), guard=guard)
    assert not isinstance(raised.value, RepositoryWriteFailed)
    assert names(tmp_path) == []


def test_the_temporary_name_is_recognisable_and_unique() -> None:
    first, second = temp_name("000000010000000000000001"), temp_name("000000010000000000000001")
    assert first != second
    match = TEMP_NAME.fullmatch(first)
    assert match and match["name"] == "000000010000000000000001"
