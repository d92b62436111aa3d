"""PostgreSQL WAL names, LSNs, timelines and segment headers, and where WAL lives in the repository.

Everything here is pure: no server, no I/O beyond listing the repository in ``list_archived`` and
``list_archived_for``.

WAL file names (PostgreSQL ``xlog_internal.h``)::

    000000010000000A000000FF            segment: timeline, log id, segment within the log id
    000000010000000A000000FF.partial    last segment of a timeline left at a promotion
    00000002.history                    parents of timeline 2 and where it forked
    000000010000000A000000FF.00000028.backup   backup history file (start/stop of a base backup)

In the repository (keys built by ``repo/layout.py``) every WAL object's key carries the SHA-256 of
its plaintext, as pgBackRest's carries a SHA-1, so an identical re-push is recognised, and a different
one refused, from a listing; this module says which folder a name belongs in.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hadr_backup.errors import RepositoryError
from hadr_backup.repo import layout

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
XLOG_BLCKSZ = 8192

_SEGMENT = re.compile(r"[0-9A-F]{24}")
_PARTIAL = re.compile(r"[0-9A-F]{24}\.partial")
_HISTORY = re.compile(r"[0-9A-F]{8}\.history")
_BACKUP_HISTORY = re.compile(r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup")
_SHA256 = re.compile(r"[0-9a-f]{64}")

# xlp_magic of released major versions (xlog_internal.h XLOG_PAGE_MAGIC)
PAGE_MAGIC_VERSIONS = {0xD106: 13, 0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17}
XLP_LONG_HEADER = 0x0002
# XLogLongPageHeaderData: magic u16, info u16, tli u32, pageaddr u64, rem_len u32 (+4 padding),
# sysid u64, seg_size u32, xlog_blcksz u32 -- little-endian on every platform hadr runs on
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
SEGMENT_HEADER_SIZE = _LONG_HEADER.size  # 40


class WalNameError(ValueError):
    """A string is not a WAL file name of the expected kind."""


class TimelineHistoryError(RepositoryError):
    """A timeline's history cannot be worked out from the archived .history files."""


# -- LSNs ----------------------------------------------------------------------------------------


def parse_lsn(text: str) -> int:
    """``"0/3000028"`` -> 50331688."""
    match = re.fullmatch(r"\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*", text or "")
    if not match:
        raise ValueError(f"{text!r} is not an LSN (expected two hex numbers such as 0/3000028)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """50331688 -> ``"0/3000028"`` (PostgreSQL's own spelling)."""
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"LSN {lsn} is out of range")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# -- names ---------------------------------------------------------------------------------------


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.fullmatch(name))


def is_partial(name: str) -> bool:
    return bool(_PARTIAL.fullmatch(name))


def is_history(name: str) -> bool:
    return bool(_HISTORY.fullmatch(name))


def is_backup_history(name: str) -> bool:
    return bool(_BACKUP_HISTORY.fullmatch(name))


def is_wal_file(name: str) -> bool:
    """Any file PostgreSQL hands to archive_command or asks of restore_command."""
    return is_segment(name) or is_partial(name) or is_history(name) or is_backup_history(name)


def _check_segment_size(segment_size: int) -> int:
    # initdb --wal-segsize: a power of two from 1 MiB to 1 GiB
    if segment_size < 1 << 20 or segment_size > 1 << 30 or segment_size & (segment_size - 1):
        raise ValueError(f"WAL segment size {segment_size} is not a power of two from 1 MiB to 1 GiB")
    return segment_size


def segments_per_log(segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return 0x100000000 // _check_segment_size(segment_size)


def timeline_of(name: str) -> int:
    """The timeline of any WAL file name (segment, partial, history, backup history)."""
    if not is_wal_file(name):
        raise WalNameError(f"{name!r} is not a WAL file name")
    return int(name[:8], 16)


def segment_of(name: str) -> str:
    """The 24-character segment a .partial or .backup name belongs to (a segment is its own)."""
    if is_segment(name) or is_partial(name) or is_backup_history(name):
        return name[:24]
    raise WalNameError(f"{name!r} does not name a WAL segment")


def segment_number(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The segment number (XLogSegNo) of a segment, .partial or .backup name."""
    segment = segment_of(name)
    per_log = segments_per_log(segment_size)
    log, seg = int(segment[8:16], 16), int(segment[16:24], 16)
    if seg >= per_log:
        raise WalNameError(f"{name!r} is not a valid name for {segment_size >> 20} MiB segments")
    return log * per_log + seg


def segment_name_from_number(timeline: int, number: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per_log = segments_per_log(segment_size)
    if not 0 < timeline <= 0xFFFFFFFF or number < 0:
        raise ValueError(f"no segment {number} on timeline {timeline}")
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def segment_name(timeline: int, lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The segment that holds ``lsn`` on ``timeline`` (PostgreSQL ``XLogFileName``)."""
    return segment_name_from_number(timeline, lsn // _check_segment_size(segment_size), segment_size)


def segment_start_lsn(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return segment_number(name, segment_size) * segment_size


def next_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    return segment_name_from_number(timeline_of(name), segment_number(name, segment_size) + 1, segment_size)


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


# -- timelines -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a ``.history`` file: ``parent_timeline`` ended (forked) at ``switch_lsn``."""

    parent_timeline: int
    switch_lsn: int
    reason: str = ""


@dataclass(frozen=True)
class TimelineSpan:
    """A stretch of WAL on one timeline: [begin_lsn, end_lsn); ``end_lsn`` None = still open."""

    timeline: int
    begin_lsn: int
    end_lsn: int | None

    def contains(self, lsn: int) -> bool:
        # the switch point itself still belongs to the parent: WAL up to it is the parent's
        return self.begin_lsn <= lsn and (self.end_lsn is None or lsn <= self.end_lsn)


def parse_history(text: str) -> list[HistoryEntry]:
    """Parse a ``.history`` file (``parent<TAB>switch LSN<TAB>reason`` per line, ``#`` comments)."""
    entries: list[HistoryEntry] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        try:
            parent, switch = int(fields[0]), parse_lsn(fields[1])
        except (ValueError, IndexError):
            raise WalNameError(
                f"line {number} of a timeline history file is not '<timeline> <lsn> <reason>': {line!r}"
            ) from None
        if entries and (parent <= entries[-1].parent_timeline or switch < entries[-1].switch_lsn):
            raise WalNameError(f"line {number} of a timeline history file goes backwards: {line!r}")
        entries.append(HistoryEntry(parent, switch, fields[2] if len(fields) > 2 else ""))
    return entries


def timeline_ancestry(timeline: int, histories: Mapping[int, str | Sequence[HistoryEntry]]) -> list[TimelineSpan]:
    """The timelines ``timeline`` descends from, oldest first, with where each was left.

    ``histories`` maps a timeline to its ``.history`` file (text or parsed). PostgreSQL writes the
    whole ancestry into each history file, so only ``timeline``'s own file is read; timeline 1 has
    none. The last span is ``timeline`` itself, open-ended.
    """
    if timeline < 1:
        raise ValueError(f"timeline {timeline} does not exist (timelines start at 1)")
    if timeline == 1:
        return [TimelineSpan(1, 0, None)]
    if timeline not in histories:
        raise TimelineHistoryError(
            f"{history_name(timeline)} is not in the archive: the parents of timeline {timeline} are unknown",
            hint="archive the .history file from the server's pg_wal",
        )
    history = histories[timeline]
    entries = parse_history(history) if isinstance(history, str) else list(history)
    spans, begin = [], 0
    for entry in entries:
        if entry.parent_timeline >= timeline:
            raise TimelineHistoryError(
                f"{history_name(timeline)} names timeline {entry.parent_timeline} as a parent of timeline {timeline}"
            )
        spans.append(TimelineSpan(entry.parent_timeline, begin, entry.switch_lsn))
        begin = entry.switch_lsn
    spans.append(TimelineSpan(timeline, begin, None))
    return spans


def descends_from(spans: Sequence[TimelineSpan], timeline: int, lsn: int) -> bool:
    """True when the point (timeline, lsn) lies on the ancestry ``spans``: WAL replayed along
    ``spans`` passes through it (e.g. a backup taken there can be rolled forward on them)."""
    return any(span.timeline == timeline and span.contains(lsn) for span in spans)


def timeline_at(spans: Sequence[TimelineSpan], lsn: int) -> int:
    """The timeline whose WAL holds ``lsn`` along this ancestry."""
    for span in reversed(spans):
        if span.begin_lsn <= lsn:
            return span.timeline
    return spans[0].timeline


def segments_for_range(
    start_lsn: int, end_lsn: int, spans: Sequence[TimelineSpan], segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[str]:
    """The segment names recovery reads to replay from ``start_lsn`` to ``end_lsn`` along ``spans``.

    For each segment number PostgreSQL takes the newest timeline of the ancestry that began at or
    before that segment (``XLogFileReadAnyTLI``), so the segment holding a switch point is read from
    the child timeline.
    """
    if end_lsn < start_lsn:
        raise ValueError(f"range {format_lsn(start_lsn)}..{format_lsn(end_lsn)} goes backwards")
    names = []
    for number in range(start_lsn // segment_size, end_lsn // segment_size + 1):
        timeline = spans[0].timeline
        for span in reversed(spans):
            if span.begin_lsn // segment_size <= number:
                timeline = span.timeline
                break
        names.append(segment_name_from_number(timeline, number, segment_size))
    return names


# -- segment headers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentHeader:
    """The long page header at the start of every WAL segment (``XLogLongPageHeaderData``)."""

    system_identifier: int
    timeline: int
    segment_size: int
    page_magic: int
    page_address: int = 0
    block_size: int = XLOG_BLCKSZ

    @property
    def pg_version(self) -> int | None:
        """The major version that writes this WAL format, when it is a released one."""
        return PAGE_MAGIC_VERSIONS.get(self.page_magic)


def read_segment_header(first_bytes: bytes) -> SegmentHeader:
    """Parse the first 40 bytes of a WAL segment (or .partial); raise WalNameError when they are not
    a PostgreSQL WAL segment header."""
    if len(first_bytes) < SEGMENT_HEADER_SIZE:
        raise WalNameError(
            f"a WAL segment starts with a {SEGMENT_HEADER_SIZE}-byte header; got {len(first_bytes)} bytes"
        )
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(first_bytes)
    if magic >> 12 != 0xD or not info & XLP_LONG_HEADER:
        raise WalNameError(f"not a WAL segment header (magic {magic:#06x}, info {info:#06x})")
    if seg_size == 0 or seg_size & (seg_size - 1) or blcksz == 0:
        raise WalNameError(f"not a WAL segment header (segment size {seg_size}, block size {blcksz})")
    return SegmentHeader(
        system_identifier=sysid,
        timeline=tli,
        segment_size=seg_size,
        page_magic=magic,
        page_address=pageaddr,
        block_size=blcksz,
    )


# -- repository layout ---------------------------------------------------------------------------


def wal_prefix(source: str) -> str:
    return layout.wal_prefix(source)


def archive_info_key(source: str) -> str:
    return layout.wal_identity(source)


def wal_folder_name(name: str) -> str:
    """The folder a WAL file's object lives in: by timeline + log id, or ``history``."""
    return layout.WAL_HISTORY_FOLDER if is_history(name) else segment_of(name)[:16]


def wal_dir_key(source: str, name: str) -> str:
    return layout.wal_folder(source, wal_folder_name(name))


def wal_object_key(source: str, name: str, sha256: str) -> str:
    """The key of WAL file ``name`` whose plaintext has SHA-256 ``sha256`` (lower-case hex)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a lower-case hex SHA-256")
    if not is_wal_file(name):
        raise WalNameError(f"{name!r} is not a WAL file name")
    return layout.wal_object(source, wal_folder_name(name), f"{name}-{sha256}")


def wal_name_prefix(source: str, name: str) -> str:
    """List this prefix to find every stored version of ``name`` (filter with ``parse_wal_key``)."""
    return layout.wal_object(source, wal_folder_name(name), name)


def parse_wal_key(key: str) -> tuple[str, str, str] | None:
    """``wal/<source>/<dir>/<name>-<sha256>`` -> (source, name, sha256); None for other keys."""
    parts = layout.split_wal_key(key)
    if parts is None or "-" not in parts[2]:
        return None
    source, folder, file_name = parts
    name, sha256 = file_name.rsplit("-", 1)
    if not _SHA256.fullmatch(sha256) or not is_wal_file(name):
        return None
    try:
        if folder != wal_folder_name(name):
            return None
    except WalNameError:
        return None
    return source, name, sha256


@dataclass(frozen=True, slots=True)  # one per archived file: kept small
class ArchivedFile:
    name: str
    key: str
    sha256: str
    size: int  # stored (compressed, encrypted) bytes
    mtime: float


@dataclass
class ArchivedWal:
    """What the repository holds for one source, sorted by name."""

    source: str
    segments: dict[int, list[ArchivedFile]] = field(default_factory=dict)  # by timeline
    histories: list[ArchivedFile] = field(default_factory=list)
    partials: list[ArchivedFile] = field(default_factory=list)
    backup_histories: list[ArchivedFile] = field(default_factory=list)
    conflicts: dict[str, list[ArchivedFile]] = field(default_factory=dict)  # one name, several contents
    _by_name: dict[str, ArchivedFile] | None = field(default=None, repr=False, compare=False)

    @property
    def timelines(self) -> list[int]:
        return sorted(set(self.segments) | {timeline_of(h.name) for h in self.histories})

    def all_segments(self) -> list[ArchivedFile]:
        return sorted((f for files in self.segments.values() for f in files), key=lambda f: f.name)

    def segment_count(self) -> int:
        return sum(len(files) for files in self.segments.values())

    def newest_segment(self) -> ArchivedFile | None:
        """The segment furthest along in WAL (highest segment number, then highest timeline)."""
        every = (f for files in self.segments.values() for f in files)
        return max(every, key=lambda f: (f.name[8:24], f.name[:8]), default=None)

    def find(self, name: str) -> ArchivedFile | None:
        """The archived file ``name`` (by a name index, built on first use: fill the groups first)."""
        if self._by_name is None:
            groups = [*self.segments.values(), self.histories, self.partials, self.backup_histories]
            self._by_name = {f.name: f for group in groups for f in group}
        return self._by_name.get(name)


def list_archived(repo_or_store, source: str) -> ArchivedWal:
    """Everything archived for ``source``: segments by timeline, history, partial and backup files.
    One listing of the whole archive, streamed: for the few files of one operation use
    ``list_archived_for``, whose cost does not grow with the archive."""
    store = getattr(repo_or_store, "store", repo_or_store)
    return group_archived(source, store.list(wal_prefix(source)))


def list_archived_for(repo_or_store, source: str, names: Iterable[str]) -> ArchivedWal:
    """What is archived for ``source`` in the folders that hold ``names`` (a timeline + log id each, or
    the history folder): ``find`` answers for every one of ``names``, and the listing covers a few
    folders however large the rest of the archive is."""
    store = getattr(repo_or_store, "store", repo_or_store)
    folders = sorted({wal_dir_key(source, name) for name in names})
    return group_archived(source, (info for folder in folders for info in store.list(folder + "/")))


def group_archived(source: str, infos: Iterable) -> ArchivedWal:
    """Sort listed objects (``ObjectInfo``-like: key, size, mtime) into an ``ArchivedWal``, keeping one
    small record per file (a listing is consumed as it streams)."""
    archived = ArchivedWal(source)
    first: dict[str, ArchivedFile] = {}
    for info in infos:
        parsed = parse_wal_key(info.key)
        if parsed is None or parsed[0] != source:
            continue
        found = ArchivedFile(parsed[1], info.key, parsed[2], info.size, info.mtime)
        if parsed[1] in first:
            archived.conflicts.setdefault(parsed[1], [first[parsed[1]]]).append(found)
        else:
            first[parsed[1]] = found
    for name in sorted(first):
        file = first[name]
        if is_history(name):
            archived.histories.append(file)
        elif is_partial(name):
            archived.partials.append(file)
        elif is_backup_history(name):
            archived.backup_histories.append(file)
        else:
            archived.segments.setdefault(timeline_of(name), []).append(file)
    archived.conflicts = dict(sorted(archived.conflicts.items()))
    archived._by_name = first  # find()'s index
    return archived
