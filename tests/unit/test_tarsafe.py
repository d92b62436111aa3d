"""Tar extraction refuses members that escape the target; the scanner follows a stream fed in pieces."""

from __future__ import annotations

import io
import os
import posixpath
import random
import tarfile
from pathlib import Path

import pytest

from hadr_backup.postgres.tarsafe import SafeExtractor, TarScanner, UnsafeArchive, safe_name


def _tar(members: list[tuple], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """members: (name, kind, payload-or-linkname); kind in file|dir|symlink|hardlink|fifo|chr."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o600
            if kind == "file":
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            info.mode = 0o700 if kind == "dir" else 0o600
            if kind in ("symlink", "hardlink"):
                info.linkname = value
            archive.addfile(info)
    return buffer.getvalue()


def _pieces(data: bytes, seed: int = 1) -> list[bytes]:
    rng, out, position = random.Random(seed), [], 0
    while position < len(data):
        size = rng.choice([1, 7, 511, 512, 513, 4096, 65536])
        out.append(data[position : position + size])
        position += size
    return out


def _extract(tmp_path: Path, data: bytes) -> Path:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    SafeExtractor(root).extract(_pieces(data))
    return root


def test_ordinary_archive_extracts_exactly(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    data = _tar(
        [
            ("base", "dir", None),
            ("base/1", "dir", None),
            ("base/1/1259", "file", big),
            ("./PG_VERSION", "file", b"15\n"),
            ("empty", "file", b""),
            ("base/link", "symlink", "1/1259"),
            ("base/hard", "hardlink", "base/1/1259"),
            ("pg_wal/archive_status", "dir", None),
            ("deep/er/" + "n" * 120, "file", b"long name"),
        ]
    )
    root = _extract(tmp_path, data)
    assert (root / "base/1/1259").read_bytes() == big
    assert (root / "PG_VERSION").read_bytes() == b"15\n"
    assert (root / "empty").read_bytes() == b""
    assert os.readlink(root / "base/link") == "1/1259"
    assert (root / "base/hard").read_bytes() == big
    assert (root / ("deep/er/" + "n" * 120)).read_bytes() == b"long name"
    assert (root / "pg_wal/archive_status").is_dir()
    assert oct((root / "base/1/1259").stat().st_mode & 0o777) == oct(0o600)


# hostile archives: (members, what the refusal says); bench/bench_tar.py runs them through tarfile too
ESCAPING = [
    ([("../evil", "file", b"x")], "'..'"),
    ([("a/../../evil", "file", b"x")], "'..'"),
    ([("/etc/evil", "file", b"x")], "absolute"),
    ([("out", "symlink", "../../etc")], "outside"),
    ([("out", "symlink", "/etc/passwd")], "absolute"),
    ([("a", "dir", None), ("a/out", "symlink", "../..")], "outside"),
    ([("f", "file", b"x"), ("out", "hardlink", "../f")], "outside"),
    ([("out", "hardlink", "/etc/passwd")], "absolute"),
    ([("pipe", "fifo", None)], "never holds"),
    ([("dev", "chr", None)], "never holds"),
    ([("f", "file", b"x"), ("f", "file", b"y")], "twice"),
    ([("in", "symlink", "sub"), ("sub", "symlink", "..")], "outside"),
    ([("b", "symlink", "."), ("a", "symlink", "b/..")], "outside"),
    ([("d", "dir", None), ("d/l", "symlink", "../d")], "outside"),
]


@pytest.mark.parametrize("members, why", ESCAPING)
def test_escaping_members_are_refused(tmp_path: Path, members: list, why: str) -> None:
    outside = tmp_path / "evil"
    with pytest.raises(UnsafeArchive, match=why):
        _extract(tmp_path, _tar(members))
    assert not outside.exists()


COLLIDING = [
    ([("a", "file", b"x"), ("a", "dir", None)], {"a": "file"}),
    ([("a", "file", b"x"), ("a/b", "file", b"y")], {"a": "file"}),
    ([("a", "file", b"x"), ("a/b/c", "dir", None)], {"a": "file"}),
    ([("l", "symlink", "missing"), ("l/x", "file", b"y")], {"l": "symlink"}),
    ([("l", "symlink", "missing"), ("l/x", "symlink", "y")], {"l": "symlink"}),
    ([("l", "symlink", "f"), ("f", "file", b"x"), ("l/x", "file", b"y")], {"l": "symlink", "f": "file"}),
    ([("l", "symlink", "x"), ("l", "file", b"y")], {"l": "symlink"}),
    ([("d", "dir", None), ("d", "symlink", "e")], {"d": "dir"}),
]
COLLIDING_IDS = [
    "file-then-dir",
    "file-then-path-through-it",
    "file-then-deeper-dir",
    "dangling-link-then-path-through-it",
    "dangling-link-then-link-through-it",
    "link-to-file-then-path-through-it",
    "link-then-file-of-that-name",
    "dir-then-link-of-that-name",
]


@pytest.mark.parametrize("members, left", COLLIDING, ids=COLLIDING_IDS)
def test_members_colliding_with_earlier_ones_are_unsafe_archives(tmp_path: Path, members: list, left: dict) -> None:
    """Never a bare FileExistsError / NotADirectoryError: the restore reports an unsafe archive."""
    with pytest.raises(UnsafeArchive, match="clashes with an entry extracted before it|appears twice|where a link"):
        _extract(tmp_path, _tar(members))
    root = tmp_path / "root"
    kinds = {p.name: "symlink" if p.is_symlink() else "dir" if p.is_dir() else "file" for p in root.iterdir()}
    assert kinds == left  # nothing was written through or over the earlier entry
    assert not (tmp_path / "missing").exists() and not (root / "missing").exists()


def path_max_escape() -> bytes:
    """Symbolic links whose resolved path outgrows PATH_MAX, so os.path.realpath() stops resolving early and
    judges ``escape`` inside the target while the kernel resolves it two levels above it (CVE-2025-4517:
    tarfile's data filter writes ``escape/pwned`` outside the target on Python < 3.11.13, 3.12.11, 3.13.4)."""
    long_part, steps, path = "d" * 247, "abcdefghijklmnop", ""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for step in steps:
            folder = tarfile.TarInfo(posixpath.join(path, long_part))
            folder.type, folder.mode = tarfile.DIRTYPE, 0o700
            archive.addfile(folder)
            link = tarfile.TarInfo(posixpath.join(path, step))
            link.type, link.linkname = tarfile.SYMTYPE, long_part
            archive.addfile(link)
            path = posixpath.join(path, long_part)
        deep = tarfile.TarInfo(posixpath.join(*steps, "l" * 254))
        deep.type, deep.linkname = tarfile.SYMTYPE, "/".join([".."] * len(steps))
        archive.addfile(deep)
        escape = tarfile.TarInfo("escape")
        escape.type, escape.linkname = tarfile.SYMTYPE, deep.name + "/../.."
        archive.addfile(escape)
        pwned = tarfile.TarInfo("escape/pwned")
        pwned.size = 5
        archive.addfile(pwned, io.BytesIO(b"owned"))
    return buffer.getvalue()


def test_a_link_chain_longer_than_path_max_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a" / "root"
    root.mkdir(parents=True)
    with pytest.raises(UnsafeArchive, match="outside"):
        SafeExtractor(root).extract(_pieces(path_max_escape()))
    assert sorted(p.name for p in tmp_path.rglob("pwned")) == []


def test_a_full_disk_is_not_taken_for_an_unsafe_archive(tmp_path: Path) -> None:
    """Only collisions become UnsafeArchive; an OSError such as ENOSPC stays what it is."""
    import errno

    class FullDisk(SafeExtractor):
        def _file(self, path, member, body):
            raise OSError(errno.ENOSPC, "No space left on device", path)

    (tmp_path / "root").mkdir()
    with pytest.raises(OSError) as raised:
        FullDisk(tmp_path / "root").extract([_tar([("f", "file", b"x")])])
    assert raised.value.errno == errno.ENOSPC and not isinstance(raised.value, UnsafeArchive)


def test_pax_paths_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="'..'"):
        _extract(tmp_path, _tar([("x/" * 60 + "../" * 70 + "evil", "file", b"x")], fmt=tarfile.PAX_FORMAT))


def test_writing_through_an_existing_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "escape")  # planted before extraction (e.g. a non-empty target with --force)
    with pytest.raises(UnsafeArchive, match="through a link"):
        SafeExtractor(root).extract([_tar([("escape/file", "file", b"x")])])
    assert list(outside.iterdir()) == []


def test_truncated_and_damaged_streams_are_refused(tmp_path: Path) -> None:
    data = _tar([("f", "file", os.urandom(5000))])
    with pytest.raises(UnsafeArchive, match="ends inside a member"):
        SafeExtractor(tmp_path).extract([data[:3000]])
    damaged = bytearray(data)
    damaged[10] ^= 0xFF
    (tmp_path / "again").mkdir()
    with pytest.raises(UnsafeArchive, match="damaged"):
        SafeExtractor(tmp_path / "again").extract([bytes(damaged)])
    (tmp_path / "third").mkdir()
    with pytest.raises(UnsafeArchive, match="end-of-archive"):
        SafeExtractor(tmp_path / "third").extract([data[: 512 + 5120]])


def test_safe_name_normalises() -> None:
    assert safe_name("./pg_wal/archive_status/") == "pg_wal/archive_status"
    assert safe_name("base//1/./2") == "base/1/2"
    with pytest.raises(UnsafeArchive):
        safe_name("C:/windows")


def test_scanner_follows_members_and_captures() -> None:
    manifest = b'{"PostgreSQL-Backup-Manifest-Version": 1}' * 100
    data = _tar(
        [
            ("backup_label", "file", b"START WAL LOCATION: 0/2000028\n"),
            ("base", "dir", None),
            ("base/big", "file", os.urandom(70_000)),
            ("global/pg_control", "file", b"c" * 8192),
            ("backup_manifest", "file", manifest),
        ],
        fmt=tarfile.USTAR_FORMAT,
    )
    scanner = TarScanner(capture=("backup_label", "backup_manifest"))
    for piece in _pieces(data, seed=7):
        scanner.feed(piece)
    assert scanner.ended
    assert scanner.names == ["backup_label", "base", "base/big", "global/pg_control", "backup_manifest"]
    assert scanner.captured == {"backup_label": b"START WAL LOCATION: 0/2000028\n", "backup_manifest": manifest}
    assert scanner.offset == len(data)
