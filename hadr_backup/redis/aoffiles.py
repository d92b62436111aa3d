"""A Redis 7 multi-part AOF directory as hadr reads it: the manifest, the files it lists, and where the
growing incr file may be cut (after the last complete command, never inside MULTI … EXEC).

The manifest (``appendonly.aof.manifest``) has one line per file: ``file <name> seq <n> type <b|h|i>``
(base, history, incr). Redis writes it to a temporary file and renames it, so a read sees one version
whole. Base and history files never change once listed; incr files only grow, and only the last one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hadr_backup.errors import HadrError

READ_SIZE = 1 << 20
BASE, HISTORY, INCR = "b", "h", "i"
TYPES = (BASE, HISTORY, INCR)


class AofUnreadable(HadrError):
    """The AOF directory cannot be read as a Redis 7 multi-part AOF."""


@dataclass(frozen=True)
class AofFile:
    name: str
    seq: int
    type: str  # b | h | i


@dataclass(frozen=True)
class Manifest:
    text: str
    files: tuple[AofFile, ...]

    @property
    def last_incr(self) -> str | None:
        """The incr file Redis appends to now (the last one listed)."""
        incrs = [f.name for f in self.files if f.type == INCR]
        return incrs[-1] if incrs else None


def parse_manifest(text: str) -> Manifest:
    files = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        fields = dict(zip(words[::2], words[1::2], strict=False))
        if len(words) % 2 or not {"file", "seq", "type"} <= fields.keys() or fields["type"] not in TYPES:
            raise AofUnreadable(f"AOF manifest line {number} is not `file <name> seq <n> type <b|h|i>`: {line!r}")
        if "/" in fields["file"] or fields["file"].startswith("."):
            raise AofUnreadable(f"the AOF manifest names a file outside its directory: {fields['file']!r}")
        files.append(AofFile(fields["file"], int(fields["seq"]), fields["type"]))
    return Manifest(text, tuple(files))


def find_aof_dir(aof_dir: str | None, appenddirname: str, appendfilename: str) -> Path | None:
    """The directory holding ``<appendfilename>.manifest``: ``aof_dir`` itself or its ``appenddirname``
    (a policy may name Redis's ``dir``); None when it is not on this host."""
    if not aof_dir:
        return None
    for candidate in (Path(aof_dir), Path(aof_dir) / appenddirname):
        if (candidate / f"{appendfilename}.manifest").is_file():
            return candidate
    return None


def read_manifest(directory: Path, appendfilename: str) -> Manifest:
    path = directory / f"{appendfilename}.manifest"
    try:
        return parse_manifest(path.read_text())
    except OSError as error:
        raise AofUnreadable(f"cannot read {path}: {error.strerror}") from error


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise AofUnreadable(f"cannot read {path}: {error.strerror}") from error


def read_range(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The bytes [start, end) of ``path``, in pieces."""
    with open(path, "rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            data = handle.read(min(READ_SIZE, left))
            if not data:
                raise AofUnreadable(f"{path} ended at {end - left}, before {end}")
            left -= len(data)
            yield data


def complete_end(path: Path, start: int, size: int) -> int:
    """The offset after the last whole command in ``path`` between ``start`` (a command boundary) and
    ``size``, outside MULTI … EXEC: a copy up to it ends on a command Redis finished writing. ``#TS:``
    annotation lines count as commands of their own."""
    safe = start
    in_multi = False
    with open(path, "rb") as handle:
        handle.seek(start)
        offset = start
        while offset < size:
            command = _next_command(handle, size - offset)
            if command is None:
                break
            length, name = command
            offset += length
            if name == b"MULTI":
                in_multi = True
            elif name in (b"EXEC", b"DISCARD"):
                in_multi = False
            if not in_multi:
                safe = offset
    return safe


def _next_command(handle, limit: int) -> tuple[int, bytes] | None:
    """(bytes, upper-case name) of the command at the handle's position, None when it is not whole
    within ``limit`` bytes."""
    line = handle.readline(min(limit, 64))
    if not line.endswith(b"\r\n"):
        return None
    if line.startswith(b"#"):
        return len(line), b"#"
    if not line.startswith(b"*"):
        raise AofUnreadable(f"{handle.name}: not a RESP command at offset {handle.tell() - len(line)}")
    length, name = len(line), b""
    for index in range(int(line[1:])):
        header = handle.readline(min(limit - length, 64))
        if not header.endswith(b"\r\n") or not header.startswith(b"$"):
            return None
        body = int(header[1:]) + 2
        length += len(header) + body
        if length > limit:
            return None
        if index == 0:
            name = handle.read(min(body, 64)).rstrip(b"\r\n").upper()
            handle.seek(body - min(body, 64), os.SEEK_CUR)
        else:
            handle.seek(body, os.SEEK_CUR)
    return length, name
