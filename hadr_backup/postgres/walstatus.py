"""Archive status for ``hadr info``: what is archived for a source and how far it is behind.

The lag is measured against the live cluster when its DSN answers: complete segments not archived yet,
bytes of WAL past the end of the newest archived segment (``pg_current_wal_lsn()``), and in seconds the
age of the oldest commit among them, read from the cluster's pg_wal (``walpending``; unknown, and said
why, where that WAL cannot be read). The logs of the background
helpers (async pusher, prefetcher) are named with the last error of each, when their spool directory is
known: ``spool_dir``, or the cluster's data directory (``data_dir``, else asked of the cluster).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadr_backup.postgres import wal
from hadr_backup.postgres.archive import load_identity
from hadr_backup.postgres.background import helper_logs
from hadr_backup.postgres.server import open_connection
from hadr_backup.postgres.walpending import oldest_unarchived_commit
from hadr_backup.timefmt import human_size, rfc3339, short
from hadr_backup.ui import plural

if TYPE_CHECKING:
    from hadr_backup.policy.model import PostgresSource
    from hadr_backup.repo.repository import Repository

_CLUSTER_SQL = """
select pg_is_in_recovery(),
       case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end::text,
       case when pg_is_in_recovery() then null else pg_walfile_name(pg_current_wal_lsn()) end,
       (select setting::bigint from pg_settings where name = 'wal_segment_size'),  -- unit: bytes
       a.last_archived_wal, extract(epoch from a.last_archived_time)::float8, a.archived_count,
       a.last_failed_wal, extract(epoch from a.last_failed_time)::float8, a.failed_count,
       (select setting from pg_settings where name = 'data_directory')  -- null without the privilege
from pg_stat_archiver a"""
_CLUSTER_FIELDS = (
    "in_recovery",
    "current_lsn",
    "current_segment",
    "segment_size",
    "last_archived_wal",
    "last_archived_time",
    "archived_count",
    "last_failed_wal",
    "last_failed_time",
    "failed_count",
    "data_directory",
)


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
    lag_seconds: float | None = None  # age of the oldest commit not archived yet; None: unknown
    lag_basis: str | None = None  # how lag_seconds was measured, or why it is unknown
    logs: list[dict] = field(default_factory=list)  # background.HelperLog: helper, path, exists, last_error

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["newest_time"] = rfc3339(self.newest_time)
        if self.identity:  # a 64-bit unsigned integer: a string, as everywhere in --json
            data["identity"] = {**self.identity, "system_identifier": str(self.identity["system_identifier"])}
        if self.cluster:
            data["cluster"] = {
                **self.cluster,
                "last_archived_time": rfc3339(self.cluster.get("last_archived_time")),
                "last_failed_time": rfc3339(self.cluster.get("last_failed_time")),
            }
        return data

    def summary(self) -> str:
        """What is stored, and how far behind the cluster it is; then a line per background helper log."""
        if self.newest_segment is None:
            text = "archive: no WAL archived yet"
        else:
            timelines = ", ".join(map(str, self.timelines))
            text = (
                f"archive: {plural(self.segments, 'segment')} (timeline{'s' if len(self.timelines) > 1 else ''} "
                f"{timelines}), newest {self.newest_segment} stored {short(self.newest_time)} UTC"
            )
        if self.cluster and self.cluster.get("failed_count"):
            text += f"; archiver failures {self.cluster['failed_count']} (last {self.cluster.get('last_failed_wal')})"
        if self.cluster_error:
            text += f"; cluster not reachable, so the lag is unknown: {self.cluster_error}"
        if self.conflicts:
            text += f"; CONFLICTS {len(self.conflicts)}"
        lines = [text] + ([self.lag_text()] if self.lag_bytes is not None else [])
        return "\n".join(lines + [f"{label}: {value}" for label, value in describe_logs(self.logs)])

    def lag_text(self) -> str:
        """``lag: 2 full segments (40.1 MiB in all) not archived; 45 s: <how that was measured>``"""
        if not self.lag_bytes:
            return "lag: none, every WAL byte the cluster wrote is archived"
        if self.lag_segments:
            waiting = f"{plural(self.lag_segments, 'full segment')} ({human_size(self.lag_bytes)} in all) not archived"
        else:
            waiting = (
                f"{human_size(self.lag_bytes)} of WAL not archived (the current segment: archived when it "
                f"fills or archive_timeout passes)"
            )
        if self.lag_seconds is None:
            return f"lag: {waiting}; age of the oldest commit among it {self.lag_basis}"
        return f"lag: {waiting}; {self.lag_seconds:.0f} s: {self.lag_basis}"


def archive_status(
    repo: Repository, source: PostgresSource | str, now: float, *, query_cluster: bool = True
) -> ArchiveStatus:
    """The archive of ``source`` (a PostgresSource or its name) and its lag behind the live cluster."""
    if isinstance(source, str):
        source = repo.policy.sources.postgres_named(source)
    archived = wal.list_archived(repo, source.name)
    identity = load_identity(repo, source.name)
    newest = archived.newest_segment()
    status = ArchiveStatus(
        source.name,
        identity.to_json() if identity else None,
        archived.segment_count(),
        archived.timelines,
        newest.name if newest else None,
        newest.mtime if newest else None,
        len(archived.histories),
        len(archived.partials),
        sorted(archived.conflicts),
    )
    if query_cluster and source.dsn:
        try:
            status.cluster = _query_cluster(source.dsn)
        except Exception as error:  # an unreachable cluster leaves the lag unknown, nothing more
            status.cluster_error = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    data_directory = source.data_dir or (status.cluster or {}).get("data_directory")
    if status.cluster and status.cluster["current_lsn"]:
        _measure_lag(status, now, source.bin_dir, data_directory)
    status.logs = [log.to_json() for log in helper_logs(source, data_directory)]
    return status


def describe_logs(logs: list[dict]) -> list[tuple[str, str]]:
    """``("<helper> log", "<path> (<state>)")`` per helper log; the state is its last error line, if any."""
    pairs = []
    for log in logs:
        state = (
            f"last error: {log['last_error']}"
            if log["last_error"]
            else "no errors"
            if log["exists"]
            else "not written yet"
        )
        pairs.append((f"{log['helper']} log", f"{log['path']} ({state})"))
    return pairs


def _query_cluster(dsn: str) -> dict[str, Any]:
    with open_connection(dsn, connect_timeout=5) as conn:
        row = conn.execute(_CLUSTER_SQL).fetchone()
    return dict(zip(_CLUSTER_FIELDS, row, strict=True))


def _measure_lag(status: ArchiveStatus, now: float, bin_dir: str, data_directory: str | None) -> None:
    cluster = status.cluster
    segment_size = int(cluster["segment_size"])
    current = wal.parse_lsn(cluster["current_lsn"])
    if status.newest_segment is None:
        return
    archived_end = (wal.segment_number(status.newest_segment, segment_size) + 1) * segment_size
    status.lag_segments = max(0, current // segment_size - archived_end // segment_size)
    status.lag_bytes = max(0, current - archived_end)
    if cluster["in_recovery"] or not cluster["current_segment"]:
        status.lag_basis = "unknown: the cluster is in recovery"
    elif not data_directory:
        status.lag_basis = "unknown: the cluster's data directory is not known (set data_dir in the policy)"
    else:
        identity = status.identity or {}
        pending = oldest_unarchived_commit(
            bin_dir,
            Path(data_directory) / "pg_wal",
            wal.timeline_of(cluster["current_segment"]),
            archived_end,
            current,
            segment_size,
            identity.get("system_identifier"),
            now,
        )
        status.lag_seconds, status.lag_basis = pending.seconds, pending.basis
