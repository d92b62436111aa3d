"""The PostgreSQL engine: how the registry (``hadr_backup.engines``) reaches PostgreSQL backups.

Each method is a thin call into the module that does the work: basebackup (backup), restore (restore),
archiveview (restorable windows), walstatus (archive lag), walchain (verification).
"""

from __future__ import annotations

from hadr_backup.engines import EngineContext, Needs
from hadr_backup.policy.model import Policy, PostgresSource
from hadr_backup.postgres import KIND
from hadr_backup.postgres.archiveview import Window, restorable_window
from hadr_backup.postgres.backupmeta import PgBackupMeta
from hadr_backup.postgres.basebackup import run_backup_pg
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
        return run_restore_pg(ctx.policy, options)

    def windows(self, repo, source_name: str, now: float) -> list[Window]:
        return restorable_window(repo, source_name)

    def status(self, repo, source_name: str, now: float):
        return archive_status(repo, source_name, now)

    def needs(self, entry: BackupEntry) -> Needs:
        meta = PgBackupMeta.of(entry)
        own = [o.key for o in entry.objects] + [layout.backup_description(entry.kind, entry.source, entry.id)]
        return Needs(objects=tuple(own), stream_prefix=layout.wal_prefix(entry.source), stream_from=meta.start_wal,
                     stream_keys=tuple(entry.needs))

    def verify(self, repo, source_name: str, report: Report, deep: bool) -> None:
        report.findings.extend(check_wal_chain(repo, source_name))
        if deep:
            for info in repo.store.list(layout.wal_prefix(source_name)):
                if info.key == layout.wal_identity(source_name):
                    continue
                report.count("wal_objects")
                read_through(repo, info.key, None, info.key.rsplit("/", 1)[-1], report)


ENGINE = PostgresEngine()
