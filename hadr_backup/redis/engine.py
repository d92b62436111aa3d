"""The Redis engine: how the registry (``hadr_backup.engines``) reaches Redis snapshots.

Each method is a thin call into the module that does the work: backup (snapshots over the replication
protocol), restore (to a directory, from a snapshot or the AOF archive), windows (snapshot instants, the
AOF archive's seconds), aofretention (the AOF files no kept snapshot needs), checks (``hadr check`` and
``verify repo --deep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hadr_backup.engines import EngineContext, Needs, StreamObject
from hadr_backup.policy.model import Policy, RedisSource
from hadr_backup.redis import KIND, aofretention
from hadr_backup.redis.aofarchive import archived_state
from hadr_backup.redis.aoflag import AofLag, measure_lag
from hadr_backup.redis.aofrestore import AofWindow, load_chain
from hadr_backup.redis.backup import run_backup_redis
from hadr_backup.redis.backupmeta import RedisBackupMeta, meta_json
from hadr_backup.redis.checks import check_aof_archive, check_rdb_objects, check_source
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.ui import plural
from hadr_backup.verify.findings import Report


@dataclass(frozen=True)
class SnapshotWindow:
    """Without archived AOF a Redis source is restorable to the instants of its snapshots only."""

    instants: tuple[float, ...]
    backups: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "snapshots",
            "start": rfc3339(self.instants[0]),
            "end": rfc3339(self.instants[-1]),
            "instants": [rfc3339(t) for t in self.instants],
            "backups": list(self.backups),
        }

    def describe(self) -> str:
        return (
            f"snapshot instants only: the instants of its {plural(len(self.instants), 'snapshot')}, "
            f"{format_time(self.instants[0])} .. {format_time(self.instants[-1])}"
        )


@dataclass(frozen=True)
class AofArchiveStatus:
    """What `hadr archive redis` stored (the window it restores to is an AofWindow)."""

    files: int
    archived_bytes: int
    updated_at: float | None
    lag: AofLag

    @classmethod
    def of(cls, repo, source: RedisSource, now: float) -> AofArchiveStatus | None:
        state = archived_state(repo, source.name)
        if state is None:
            return None
        files = state.get("files", {})
        lag = measure_lag(repo, source, state, now)
        return cls(len(files), sum(f["archived"] for f in files.values()), state.get("updated_at"), lag)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "redis-aof",
            "files": self.files,
            "archived_bytes": self.archived_bytes,
            "updated_at": rfc3339(self.updated_at),
            "last_piece_at": rfc3339(self.lag.last_piece_at),
            "lag_bytes": self.lag.bytes,
            "lag_seconds": self.lag.seconds,
            "lag_basis": self.lag.basis,
        }

    def summary(self) -> str:
        lag = self.lag
        behind = "unknown" if lag.bytes is None else f"{lag.bytes} bytes"
        if lag.seconds is not None:
            behind += f", oldest unarchived write {lag.seconds:.0f} s old"
        last = format_time(lag.last_piece_at) if lag.last_piece_at else "-"
        return (
            f"AOF archive: {plural(self.files, 'file')}, {self.archived_bytes} bytes, last piece {last}\n"
            f"AOF archive lag: {behind} ({lag.basis})"
        )


class RedisEngine:
    kind = KIND
    section = "redis"
    title = "Redis"

    def sources(self, policy: Policy) -> tuple[RedisSource, ...]:
        return policy.sources.redis

    def backup(self, ctx: EngineContext, source_name: str | None):
        return run_backup_redis(ctx.policy, source_name, ctx.ui)

    def restore(self, ctx: EngineContext, options):
        # imported here, not at the top: the restore modules pull in PostgreSQL's restore-directory checks,
        # and importing them on every `hadr backup redis` cost about 25 ms of CPU at its start-up
        from hadr_backup.redis.into import run_restore_into
        from hadr_backup.redis.restore import run_restore_redis

        run = run_restore_into if options.into else run_restore_redis
        return run(ctx.policy, options, ctx.ui)

    def windows(self, repo, source_name: str, now: float) -> list[SnapshotWindow | AofWindow]:
        snapshots = sorted(
            repo.catalog.select(kind=KIND, source=source_name, state="complete"), key=lambda e: e.consistent_at
        )
        windows: list[SnapshotWindow | AofWindow] = []
        if snapshots:
            windows.append(SnapshotWindow(tuple(e.consistent_at for e in snapshots), tuple(e.id for e in snapshots)))
        if chain := load_chain(repo, source_name):
            windows.append(chain.window)
        return windows

    def status(self, repo, source_name: str, now: float) -> AofArchiveStatus | None:
        return AofArchiveStatus.of(repo, repo.policy.sources.redis_named(source_name), now)

    def describe(self, entry: BackupEntry) -> list[tuple[str, str]]:
        if "snapshot_at" not in entry.meta:  # a snapshot that failed before the RDB arrived
            return []
        meta = RedisBackupMeta.of(entry)
        return [("snapshot", format_time(meta.snapshot_at)), ("keys", str(sum(meta.keys.values())))]

    def needs(self, entry: BackupEntry) -> Needs:
        own = [o.key for o in entry.objects] + [layout.backup_description(entry.kind, entry.source, entry.id)]
        return Needs(objects=tuple(own))

    def stream_expired(self, repo, source_name: str, kept) -> list[StreamObject]:
        return aofretention.stream_expired(repo, source_name, kept)

    def forget_stream(self, repo, source_name: str, keys) -> None:
        aofretention.forget_files(repo, source_name, keys)

    def meta_json(self, entry: BackupEntry) -> dict:
        return meta_json(entry.meta)

    def verify(self, repo, source_name: str, report: Report, deep: bool) -> None:
        if deep:
            check_rdb_objects(repo, repo.catalog.select(kind=KIND, source=source_name, state="complete"), report)
        check_aof_archive(repo, source_name, report, deep)

    def check(self, ctx: EngineContext, source_name: str, timeout: float) -> Report:
        return check_source(ctx.policy.sources.redis_named(source_name))


ENGINE = RedisEngine()
