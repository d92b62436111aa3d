"""Archive status for ``hadr info``: what is archived for a source and how far it is behind.

The lag is measured against the live cluster when its DSN answers: complete segments not archived yet,
bytes of WAL past the end of the newest archived segment, and the age of that segment while
anything is missing (``pg_current_wal_lsn()`` and ``pg_stat_archiver``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hadr_backup.postgres import wal
from hadr_backup.postgres.archive import load_identity
from hadr_backup.postgres.server import open_connection

if TYPE_CHECKING:
    from hadr_backup.policy.model import PostgresSource
    from hadr_backup.repo.repository import Repository

_CLUSTER_SQL = """
select pg_is_in_recovery(),
       case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end::text,
       case when pg_is_in_recovery() then null else pg_walfile_name(pg_current_wal_lsn()) end,
       (select setting::bigint from pg_settings where name = 'wal_segment_size'),  -- unit: bytes
       a.last_archived_wal, extract(epoch from a.last_archived_time)::float8, a.archived_count,
       a.last_failed_wal, extract(epoch from a.last_failed_time)::float8, a.failed_count
from pg_stat_archiver a"""
_CLUSTER_FIELDS = ("in_recovery", "current_lsn", "current_segment", "segment_size", "last_archived_wal",
                   "last_archived_time", "archived_count", "last_failed_wal", "last_failed_time", "failed_count")


@dataclass
class ArchiveStatus:
    """What is archived for a source and, when its cluster answers, how far the archive is behind."""

    source: str
    identity: dict | None
    segments: int
    timelines: list[int]
    newest_segment: str | None
    newest_time: float | None
    history_files: int
    partial_files: int
    conflicts: list[str]
    cluster: dict | None = None  # pg_current_wal_lsn and pg_stat_archiver, when reachable
    cluster_error: str | None = None
    lag_segments: int | None = None  # complete segments not in the archive yet
    lag_bytes: int | None = None  # WAL written past the end of the newest archived segment
    lag_seconds: float | None = None  # age of the newest archived segment while anything is missing

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, out) -> None:
        newest = self.newest_segment or "none"
        if self.newest_time:
            newest += time.strftime(" (%Y-%m-%d %H:%M:%S UTC)", time.gmtime(self.newest_time))
        pairs = [("source", self.source), ("archived segments", self.segments),
                 ("timelines", ", ".join(map(str, self.timelines)) or "none"), ("newest segment", newest)]
        if self.lag_segments is not None:
            pairs.append(("archive lag", f"{self.lag_segments} segment(s), {self.lag_bytes} bytes, "
                                         f"{self.lag_seconds:.0f}s behind"))
        elif self.cluster_error:
            pairs.append(("archive lag", f"unknown: {self.cluster_error}"))
        if self.cluster and self.cluster.get("failed_count"):
            pairs.append(("archive failures", f"{self.cluster['failed_count']} "
                                              f"(last: {self.cluster.get('last_failed_wal')})"))
        if self.conflicts:
            pairs.append(("conflicting names", ", ".join(self.conflicts)))
        out.kv(pairs)


def archive_status(repo: Repository, source: PostgresSource | str, now: float, *, query_cluster: bool = True,
                   archived: wal.ArchivedWal | None = None) -> ArchiveStatus:
    """The archive of ``source`` (a PostgresSource or its name) and its lag behind the live cluster.
    ``archived``: the source's archive when the caller has listed it already (one listing, not two)."""
    if isinstance(source, str):
        source = repo.policy.sources.postgres_named(source)
    if archived is None:
        archived = wal.list_archived(repo, source.name)
    identity = load_identity(repo, source.name)
    newest = archived.newest_segment()
    status = ArchiveStatus(source.name, identity.to_json() if identity else None, archived.segment_count(),
                           archived.timelines, newest.name if newest else None, newest.mtime if newest else None,
                           len(archived.histories), len(archived.partials), sorted(archived.conflicts))
    if query_cluster and source.dsn:
        try:
            status.cluster = _query_cluster(source.dsn)
        except Exception as error:  # an unreachable cluster leaves the lag unknown, nothing more
            status.cluster_error = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    if status.cluster and status.cluster["current_lsn"]:
        _measure_lag(status, now)
    return status


def _query_cluster(dsn: str) -> dict[str, Any]:
    with open_connection(dsn, connect_timeout=5) as conn:
        row = conn.execute(_CLUSTER_SQL).fetchone()
    return dict(zip(_CLUSTER_FIELDS, row, strict=True))


def _measure_lag(status: ArchiveStatus, now: float) -> None:
    cluster = status.cluster
    segment_size = int(cluster["segment_size"])
    current = wal.parse_lsn(cluster["current_lsn"])
    if status.newest_segment is None:
        return
    archived_end = (wal.segment_number(status.newest_segment, segment_size) + 1) * segment_size
    status.lag_segments = max(0, current // segment_size - archived_end // segment_size)
    status.lag_bytes = max(0, current - archived_end)
    status.lag_seconds = 0.0 if status.lag_segments == 0 else max(0.0, now - (status.newest_time or now))
