"""The PostgreSQL engine: how the registry (``hadr_backup.engines``) reaches PostgreSQL backups.

Each method is a thin call into the module that does the work: basebackup (backup), restore (restore),
archiveview (restorable windows), walstatus (archive lag), walchain (verification), walretention (the WAL
no kept backup needs), check (``hadr check``).
"""

from __future__ import annotations

from hadr_backup.engines import EngineContext, Needs, StreamObject
from hadr_backup.policy.model import Policy, PostgresSource
from hadr_backup.postgres import KIND, walretention
from hadr_backup.postgres.archiveview import ArchiveView, Window, restorable_window
from hadr_backup.postgres.backupmeta import PgBackupMeta, meta_json
from hadr_backup.postgres.basebackup import run_backup_pg
from hadr_backup.postgres.check import check_source
from hadr_backup.postgres.restore import run_restore_pg
from hadr_backup.postgres.walchain import check_wal_chain
from hadr_backup.postgres.walstatus import archive_status
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.verify.findings import Report, read_through


class PostgresEngine:
    kind = KIND
    section = "postgres"
    title = "PostgreSQL"

    def sources(self, policy: Policy) -> tuple[PostgresSource, ...]:
        return policy.sources.postgres

    def backup(self, ctx: EngineContext, source_name: str | None):
        return run_backup_pg(ctx.policy, source_name, ctx.ui)

    def restore(self, ctx: EngineContext, options):
        return run_restore_pg(ctx.policy, options, ctx.ui)

    def windows(self, repo, source_name: str, now: float) -> list[Window]:
        return restorable_window(repo, source_name)

    def status(self, repo, source_name: str, now: float):
        return archive_status(repo, source_name, now)

    def describe(self, entry: BackupEntry) -> list[tuple[str, str]]:
        if "start_lsn" not in entry.meta:  # a backup that failed before pg_basebackup said where it began
            return []
        meta = PgBackupMeta.of(entry)
        return [
            ("timeline", str(meta.timeline)),
            ("LSN", f"{meta.start_lsn} .. {meta.stop_lsn}"),
            ("WAL", f"{meta.start_wal} .. {meta.stop_wal}"),
        ]

    def needs(self, entry: BackupEntry) -> Needs:
        meta = PgBackupMeta.of(entry)
        own = [o.key for o in entry.objects] + [layout.backup_description(entry.kind, entry.source, entry.id)]
        return Needs(
            objects=tuple(own),
            stream_prefix=layout.wal_prefix(entry.source),
            stream_from=meta.start_wal,
            stream_keys=tuple(entry.needs),
        )

    def stream_expired(self, repo, source_name: str, kept) -> list[StreamObject]:
        return walretention.stream_expired(repo, source_name, kept)

    def meta_json(self, entry: BackupEntry) -> dict:
        return meta_json(entry.meta)

    def verify(self, repo, source_name: str, report: Report, deep: bool) -> None:
        view = ArchiveView.load(repo, source_name)
        report.count("wal_segments", len(view.archived.all_segments()))
        report.findings.extend(check_wal_chain(repo, source_name, view))
        if deep:
            for info in repo.store.list(layout.wal_prefix(source_name)):
                if info.key == layout.wal_identity(source_name):
                    continue
                report.count("wal_objects")
                read_through(repo, info.key, None, info.key.rsplit("/", 1)[-1], report)

    def check(self, ctx: EngineContext, source_name: str, timeout: float) -> Report:
        return check_source(ctx, ctx.policy.sources.postgres_named(source_name), timeout)


ENGINE = PostgresEngine()
