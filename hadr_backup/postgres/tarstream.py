"""Tar streams as they flow: headers, member boundaries and a pass-through scanner.

Only what pg_basebackup and ordinary tar tools write is understood: ustar headers (with the prefix
field), GNU long names and links, and pax ``path``/``linkpath`` records. Data is never built up in
memory: members come as views of the incoming chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from hadr_backup.errors import IntegrityError

BLOCK = 512
REGULAR, HARDLINK, SYMLINK, DIRECTORY = b"0", b"1", b"2", b"5"
GNU_LONGNAME, GNU_LONGLINK, PAX, PAX_GLOBAL = b"L", b"K", b"x", b"g"
_META_LIMIT = 1 << 20  # long names and pax records beyond this are not believable


class UnsafeArchive(IntegrityError):
    """The archive holds a member that would land outside the target directory, or is malformed."""


@dataclass(frozen=True)
class Member:
    name: str  # normalised relative path, no leading "./", no trailing "/"
    type: bytes
    size: int
    mode: int
    linkname: str = ""
    offset: int = 0  # where the header starts in the stream


def _octal(field_bytes: bytes, what: str) -> int:
    if field_bytes[:1] and field_bytes[0] & 0x80:  # GNU base-256 for large values
        return int.from_bytes(field_bytes[1:], "big")
    text = field_bytes.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise UnsafeArchive(f"tar header has a bad {what} field {field_bytes!r}") from None


def _text(field_bytes: bytes) -> str:
    return field_bytes.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def parse_header(block: bytes, offset: int) -> Member | None:
    """One 512-byte header (None for an all-zero block, the end marker)."""
    if not block.strip(b"\0"):
        return None
    expected = _octal(block[148:156], "checksum")
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if expected != computed:
        raise UnsafeArchive(f"tar header at byte {offset} is damaged (checksum {expected} != {computed})")
    name = _text(block[0:100])
    if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
        name = _text(block[345:500]) + "/" + name
    return Member(
        name=name,
        type=block[156:157] or REGULAR,
        size=_octal(block[124:136], "size"),
        mode=_octal(block[100:108], "mode"),
        linkname=_text(block[157:257]),
        offset=offset,
    )


def padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


class _Feed:
    """Exact reads and zero-copy pieces over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._view = memoryview(b"")
        self.offset = 0

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._view = memoryview(chunk)
                return True
        return False

    def pieces(self, size: int) -> Iterator[memoryview]:
        """``size`` bytes as views of the incoming chunks; raises when the stream ends first."""
        while size:
            if not self._view and not self._fill():
                raise UnsafeArchive(f"the tar stream ends inside a member (at byte {self.offset})")
            piece = self._view[:size]
            self._view = self._view[len(piece) :]
            self.offset += len(piece)
            size -= len(piece)
            yield piece

    def read(self, size: int) -> bytes:
        return b"".join(bytes(p) for p in self.pieces(size))

    def at_end(self) -> bool:
        return not self._view and not self._fill()

    def drain(self) -> int:
        """Consume what is left; return how many non-zero bytes it held."""
        extra = len(bytes(self._view).strip(b"\0"))
        for chunk in self._chunks:
            extra += len(bytes(chunk).strip(b"\0"))
        self._view = memoryview(b"")
        return extra


def iter_members(feed: _Feed) -> Iterator[tuple[Member, Iterator[memoryview]]]:
    """(member, its data pieces) in order; the caller must consume (or skip) the pieces first.

    GNU long names/links and pax ``path``/``linkpath`` records are folded into the next member.
    """
    long_name = long_link = None
    while True:
        offset = feed.offset
        if feed.at_end():
            raise UnsafeArchive(f"the tar stream ends at byte {offset} without its end-of-archive blocks")
        member = parse_header(feed.read(BLOCK), offset)
        if member is None:
            return
        if member.type in (GNU_LONGNAME, GNU_LONGLINK, PAX, PAX_GLOBAL):
            if member.size > _META_LIMIT:
                raise UnsafeArchive(f"tar extension header at byte {offset} is {member.size} bytes long")
            data = feed.read(member.size)
            feed.read(padded(member.size) - member.size)
            if member.type == GNU_LONGNAME:
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif member.type == GNU_LONGLINK:
                long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif member.type == PAX:
                records = _pax(data, offset)
                long_name, long_link = records.get("path", long_name), records.get("linkpath", long_link)
            continue
        if long_name is not None or long_link is not None:
            member = Member(
                long_name or member.name,
                member.type,
                member.size,
                member.mode,
                long_link if long_link is not None else member.linkname,
                offset,
            )
            long_name = long_link = None
        body = feed.pieces(member.size if member.type in (REGULAR, b"\0", b"7") else 0)
        yield member, body
        for _ in body:  # whatever the caller did not read
            pass
        feed.read(padded(member.size) - member.size if member.type in (REGULAR, b"\0", b"7") else 0)


def _pax(data: bytes, offset: int) -> dict[str, str]:
    records, position = {}, 0
    while position < len(data):
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
            key, _, value = data[space + 1 : position + length - 1].partition(b"=")
        except ValueError:
            raise UnsafeArchive(f"pax header at byte {offset} is malformed") from None
        if length <= 0:
            raise UnsafeArchive(f"pax header at byte {offset} is malformed")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


# -- scanning a stream as it passes (backup) --------------------------------------------------------


@dataclass
class TarScanner:
    """Follows member boundaries of a tar stream fed piece by piece, keeping small named members.

    ``feed()`` costs almost nothing for data bytes: only headers are parsed. ``capture`` names the
    members whose content is kept (e.g. ``backup_label``, ``backup_manifest``).
    """

    capture: tuple[str, ...] = ()
    captured: dict[str, bytes] = field(default_factory=dict)
    members: int = 0
    names: list[str] = field(default_factory=list)
    ended: bool = False
    offset: int = 0
    on_member: Callable[[Member], None] | None = None
    _need: int = BLOCK  # bytes until the next event
    _state: str = "header"  # header | data | pad | meta | done
    _pending: bytearray = field(default_factory=bytearray)
    _current: Member | None = None
    _keep: bytearray | None = None
    _pad: int = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._state == "done":
                self.offset += len(view)
                return
            take = min(self._need, len(view))
            piece, view = view[:take], view[take:]
            self._need -= take
            self.offset += take
            if self._state in ("header", "meta") or self._keep is not None:
                (self._keep if self._state == "data" and self._keep is not None else self._pending).extend(piece)
            if self._need == 0:
                self._advance()

    def _advance(self) -> None:
        if self._state == "header":
            block, self._pending = bytes(self._pending), bytearray()
            member = parse_header(block, self.offset - BLOCK)
            if member is None:
                self.ended, self._state = True, "done"
                return
            self._start(member)
        elif self._state == "data":
            if self._keep is not None and self._current is not None:
                self.captured[self._current.name] = bytes(self._keep)
                self._keep = None
            self._after_data()
        elif self._state == "meta":
            self._pending = bytearray()
            self._after_data()
        else:
            self._state, self._need = "header", BLOCK

    def _start(self, member: Member) -> None:
        name = normalise(member.name)
        self._current = Member(name, member.type, member.size, member.mode, member.linkname, member.offset)
        has_data = member.type in (REGULAR, b"\0", b"7", GNU_LONGNAME, GNU_LONGLINK, PAX, PAX_GLOBAL)
        if member.type in (GNU_LONGNAME, GNU_LONGLINK, PAX, PAX_GLOBAL):
            if member.size > _META_LIMIT:
                raise UnsafeArchive(f"tar extension header at byte {member.offset} is {member.size} bytes long")
            self._state = "meta"
        else:
            self.members += 1
            self.names.append(name)
            if self.on_member is not None:
                self.on_member(self._current)
            self._state = "data"
            self._keep = bytearray() if name in self.capture else None
        size = member.size if has_data else 0
        self._need = size
        self._pad = padded(size) - size
        if size == 0:
            self._advance()

    def _after_data(self) -> None:
        if self._pad:
            self._state, self._need = "pad", self._pad
        else:
            self._state, self._need = "header", BLOCK


def normalise(name: str) -> str:
    """Strip ``./`` and trailing slashes; keep everything else for the safety checks to judge."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or "."
