"""The PostgreSQL archive as restore sees it: complete backups, archived WAL along timelines, and the
restorable windows they make.

A backup is restorable to a point when every segment from its start LSN to that point is archived
along the timeline path that leads there (the newest timeline that had begun by each segment, as
PostgreSQL's recovery reads them). ``restorable_window`` returns the windows a recovery target can
fall in, per timeline; ``walchain.check_wal_chain`` turns gaps into findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hadr_backup.errors import HadrError
from hadr_backup.postgres import KIND, wal
from hadr_backup.postgres.backupmeta import PgBackupMeta
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.verify.findings import ERROR, Finding

END_SCAN_SEGMENTS = 4  # how far back from the end of a chain to look for its last commit


@dataclass(frozen=True)
class Window:
    """Targets in [start, end) can be reached on ``timeline``. ``end_time`` is the last commit in the
    archive (a time target needs a commit after it); None when no commit was found near the end."""

    timeline: int
    start_time: float
    end_time: float | None
    start_lsn: int
    end_lsn: int
    backups: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``end`` is null when no commit was found near the end of the archive."""
        return {
            "timeline": self.timeline,
            "start": rfc3339(self.start_time),
            "end": rfc3339(self.end_time),
            "start_lsn": wal.format_lsn(self.start_lsn),
            "end_lsn": wal.format_lsn(self.end_lsn),
            "backups": list(self.backups),
        }

    def describe(self) -> str:
        lsns = f"LSN {wal.format_lsn(self.start_lsn)} .. {wal.format_lsn(self.end_lsn)}"
        if self.end_time is not None:
            return (
                f"timeline {self.timeline}: {format_time(self.start_time)} .. {format_time(self.end_time)} "
                f"(the last archived commit; {lsns})"
            )
        return (
            f"timeline {self.timeline}: from {format_time(self.start_time)} ({lsns}); the newest time it "
            f"reaches is not known: no transaction ended in the last archived WAL (up to "
            f"{END_SCAN_SEGMENTS} segments read), and a --target-time needs a commit after it; --latest and "
            f"--target-lsn reach {wal.format_lsn(self.end_lsn)}"
        )


@dataclass(frozen=True)
class BackupPoint:
    """A complete backup as the chain sees it."""

    id: str
    timeline: int
    start_lsn: int
    stop_lsn: int
    stop_time: float
    entry: BackupEntry

    @classmethod
    def of(cls, entry: BackupEntry) -> BackupPoint:
        meta = PgBackupMeta.of(entry)
        return cls(entry.id, meta.timeline, meta.start, meta.stop, float(meta.stop_time), entry)

    @property
    def meta(self) -> PgBackupMeta:
        return PgBackupMeta.of(self.entry)


@dataclass
class ArchiveView:
    """The catalog's complete backups and the archived WAL of one source, read once."""

    source: str
    archived: wal.ArchivedWal
    histories: dict[int, str]
    backups: list[BackupPoint]
    segment_size: int
    problems: list[Finding] = field(default_factory=list)

    @classmethod
    def load(cls, repo, source: str) -> ArchiveView:
        archived = wal.list_archived(repo, source)
        entries = [e for e in repo.catalog.select(kind=KIND, source=source, state="complete") if "stop_lsn" in e.meta]
        backups = sorted((BackupPoint.of(e) for e in entries), key=lambda b: (b.stop_lsn, b.stop_time))
        view = cls(source, archived, {}, backups, _segment_size(repo, source, entries))
        for history in archived.histories:
            try:
                view.histories[wal.timeline_of(history.name)] = b"".join(repo.read_object(history.key)).decode()
            except HadrError as error:
                view.problems.append(Finding(ERROR, "history-unreadable", history.name, error.message))
        return view

    @property
    def timelines(self) -> list[int]:
        return sorted(set(self.archived.timelines) | {b.timeline for b in self.backups})

    def spans(self, timeline: int) -> list[wal.TimelineSpan]:
        return wal.timeline_ancestry(timeline, self.histories)

    def backups_on(self, spans: list[wal.TimelineSpan]) -> list[BackupPoint]:
        """Backups that recovery along ``spans`` can start from (oldest first)."""
        return [
            b
            for b in self.backups
            if wal.descends_from(spans, b.timeline, b.start_lsn) and wal.descends_from(spans, b.timeline, b.stop_lsn)
        ]

    def present(self, name: str) -> bool:
        return self.archived.find(name) is not None

    def segment_for(self, spans: list[wal.TimelineSpan], number: int) -> str:
        return wal.segments_for_range(number * self.segment_size, number * self.segment_size, spans, self.segment_size)[
            0
        ]

    def chain_from(self, spans: list[wal.TimelineSpan], start_lsn: int) -> list[str]:
        """Archived segments read from ``start_lsn`` onwards along ``spans``, up to the first missing one."""
        names, number = [], start_lsn // self.segment_size
        while True:
            name = self.segment_for(spans, number)
            if not self.present(name):
                return names
            names.append(name)
            number += 1

    def newest_on(self, spans: list[wal.TimelineSpan]) -> str | None:
        """The furthest archived segment along ``spans`` (on their last timeline, else an ancestor)."""
        for span in reversed(spans):
            files = [
                f
                for f in self.archived.segments.get(span.timeline, [])
                if span.end_lsn is None or wal.segment_start_lsn(f.name, self.segment_size) <= span.end_lsn
            ]
            if files:
                return max(files, key=lambda f: f.name[8:]).name
        return None

    def mtime(self, name: str) -> float:
        found = self.archived.find(name)
        return found.mtime if found else 0.0


def _segment_size(repo, source: str, entries: list[BackupEntry]) -> int:
    for entry in reversed(entries):
        if entry.meta.get("wal_segment_size"):
            return PgBackupMeta.of(entry).wal_segment_size
    try:
        from hadr_backup.postgres.archive import load_identity

        identity = load_identity(repo, source)
        if identity is not None:
            return identity.segment_size
    except HadrError:
        pass
    return wal.DEFAULT_SEGMENT_SIZE


def missing_between(view: ArchiveView, spans: list[wal.TimelineSpan], start_lsn: int, end_lsn: int) -> list[str]:
    return [n for n in wal.segments_for_range(start_lsn, end_lsn, spans, view.segment_size) if not view.present(n)]


def describe_gap(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)} segments)"


# -- windows ---------------------------------------------------------------------------------------


def restorable_window(repo, source: str, *, view: ArchiveView | None = None, reader=None) -> list[Window]:
    """Per timeline, the stretches a recovery target can fall in (oldest first)."""
    view = view or ArchiveView.load(repo, source)
    own_reader = reader is None
    reader = reader or _reader(repo, source, view)
    try:
        windows = []
        for timeline in view.timelines:
            windows += timeline_windows(view, timeline, reader)
        return windows
    finally:
        if own_reader:
            reader.close()


def _reader(repo, source: str, view: ArchiveView):
    from hadr_backup.postgres.waldecode import WalReader

    try:
        bin_dir = repo.policy.sources.postgres_named(source).bin_dir
    except HadrError:
        from hadr_backup.policy.model import PostgresSource

        bin_dir = PostgresSource(source, "").bin_dir
    return WalReader(repo, source, view.archived, bin_dir, view.segment_size)


def timeline_windows(view: ArchiveView, timeline: int, reader) -> list[Window]:
    try:
        spans = view.spans(timeline)
    except (HadrError, ValueError):
        return []
    windows: list[Window] = []
    for backup in view.backups_on(spans):
        chain = view.chain_from(spans, backup.start_lsn)
        if not chain:
            continue
        end_lsn = wal.segment_start_lsn(chain[-1], view.segment_size) + view.segment_size
        if end_lsn < backup.stop_lsn or (spans[-1].begin_lsn and end_lsn <= spans[-1].begin_lsn):
            continue  # not consistent, or the chain ends before this timeline begins
        if windows and backup.stop_lsn <= windows[-1].end_lsn:
            last = windows[-1]
            windows[-1] = Window(
                timeline, last.start_time, last.end_time, last.start_lsn, last.end_lsn, last.backups + (backup.id,)
            )
            continue
        windows.append(
            Window(timeline, backup.stop_time, last_commit_time(reader, chain), backup.stop_lsn, end_lsn, (backup.id,))
        )
    return windows


def last_commit_time(reader, chain: list[str]) -> float | None:
    """The newest transaction end in the last few segments of ``chain``."""
    for index in range(len(chain) - 1, max(len(chain) - 1 - END_SCAN_SEGMENTS, -1), -1):
        try:
            decoded = reader.decode([chain[index]])
        except HadrError:
            return None
        ends = [r.time for r in decoded.records if r.time is not None]
        if ends:
            return max(ends).timestamp()
    return None
