"""The Redis engine: how the registry (``hadr_backup.engines``) reaches Redis snapshots.

Each method is a thin call into the module that does the work, imported when it is called (a `hadr
backup redis` starts without the AOF, restore and check modules): backup (snapshots over the replication
protocol), restore (to a directory, from a snapshot or the AOF archive), windows (snapshot instants, the
seconds of each AOF generation), aofretention (the AOF files no kept snapshot needs), checks (``hadr check`` and
``verify repo --deep``).
"""

from __future__ import annotations

from typing import Any

from hadr_backup.engines import EngineContext, Needs, StreamObject
from hadr_backup.policy.model import Policy, RedisSource
from hadr_backup.redis import KIND
from hadr_backup.redis.backupmeta import RedisBackupMeta, meta_json
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.timefmt import format_time


class RedisEngine:
    kind = KIND
    section = "redis"
    title = "Redis"

    def sources(self, policy: Policy) -> tuple[RedisSource, ...]:
        return policy.sources.redis

    def backup(self, ctx: EngineContext, source_name: str | None):
        from hadr_backup.redis.backup import run_backup_redis

        return run_backup_redis(ctx.policy, source_name, ctx.ui)

    def restore(self, ctx: EngineContext, options):
        from hadr_backup.redis.into import run_restore_into
        from hadr_backup.redis.restore import run_restore_redis

        run = run_restore_into if options.into else run_restore_redis
        return run(ctx.policy, options, ctx.ui)

    def windows(self, repo, source_name: str, now: float) -> list[Any]:
        from hadr_backup.redis.aofwindows import load_chains
        from hadr_backup.redis.status import SnapshotWindow

        snapshots = sorted(
            repo.catalog.select(kind=KIND, source=source_name, state="complete"), key=lambda e: e.consistent_at
        )
        windows: list[Any] = []
        if snapshots:
            windows.append(SnapshotWindow(tuple(e.consistent_at for e in snapshots), tuple(e.id for e in snapshots)))
        return windows + load_chains(repo, source_name).windows  # one per restorable AOF generation

    def status(self, repo, source_name: str, now: float) -> Any:
        from hadr_backup.redis.status import AofArchiveStatus

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
        from hadr_backup.redis import aofretention

        return aofretention.stream_expired(repo, source_name, kept)

    def forget_stream(self, repo, source_name: str, keys) -> None:
        from hadr_backup.redis import aofretention

        aofretention.forget_files(repo, source_name, keys)

    def meta_json(self, entry: BackupEntry) -> dict:
        return meta_json(entry.meta)

    def verify(self, repo, source_name: str, report, deep: bool) -> None:
        from hadr_backup.redis.checks import check_aof_archive, check_rdb_objects

        if deep:
            check_rdb_objects(repo, repo.catalog.select(kind=KIND, source=source_name, state="complete"), report)
        check_aof_archive(repo, source_name, report, deep)

    def check(self, ctx: EngineContext, source_name: str, timeout: float):
        from hadr_backup.redis.checks import check_source

        return check_source(ctx.policy.sources.redis_named(source_name))


ENGINE = RedisEngine()
