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


def timestamps(handle, size: int) -> Iterator[tuple[int, int]]:
    """(offset, unix seconds) of each ``#TS:`` annotation in the first ``size`` bytes of an AOF read
    from ``handle`` (at a command boundary), found by walking whole commands (never inside a value)."""
    offset = handle.tell()
    while offset < size:
        command = _next_command(handle, size - offset)
        if command is None:
            return
        length, name = command
        if name == b"#":
            handle.seek(offset)
            line = handle.read(length)
            if line.startswith(b"#TS:"):
                yield offset, int(line[4:].strip())
        offset += length


def rdb_ctime(head: bytes) -> int | None:
    """The ``ctime`` auxiliary field of an RDB (an AOF's RDB-preamble base) from its first bytes: the
    instant it was written; None when the head holds no such field."""
    if not head.startswith(b"REDIS"):
        return None
    position = 9
    while position < len(head) and head[position] == 0xFA:  # RDB_OPCODE_AUX: a name and a value
        name, position = _rdb_string(head, position + 1)
        value, position = _rdb_string(head, position)
        if name == b"ctime" and value is not None:
            return int(value)
    return None


def _rdb_string(head: bytes, position: int) -> tuple[bytes | None, int]:
    """An RDB string at ``position`` (plain, or an integer encoding) and the position after it."""
    first = head[position]
    kind, low = first >> 6, first & 0x3F
    if kind == 0:
        return head[position + 1 : position + 1 + low], position + 1 + low
    if kind == 1:
        length = (low << 8) | head[position + 1]
        return head[position + 2 : position + 2 + length], position + 2 + length
    if kind == 3 and low in (0, 1, 2):
        width = 1 << low
        number = int.from_bytes(head[position + 1 : position + 1 + width], "little", signed=True)
        return str(number).encode(), position + 1 + width
    return None, len(head)  # a long or compressed string: not an aux field hadr needs


def _next_command(handle, limit: int) -> tuple[int, bytes] | None:
    """(bytes, upper-case name) of the command at the handle's position, None when it is not whole
    within ``limit`` bytes."""
    line = handle.readline(min(limit, 64))
    if not line.endswith(b"\r\n"):
        return None
    if line.startswith(b"#"):
        return len(line), b"#"
    if not line.startswith(b"*"):
        where = f"{getattr(handle, 'name', 'AOF')} offset {handle.tell() - len(line)}"
        raise AofUnreadable(f"{where}: not a RESP command")
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
