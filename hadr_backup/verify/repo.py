"""hadr verify repo: every object present, sizes and checksums right, decryptable; WAL continuity.

The quick pass checks presence and sizes against the catalog; ``--deep`` reads every object back
through the pipeline (authenticating every chunk and comparing the SHA-256 the catalog recorded).
Objects that no catalog entry accounts for, and leftovers of interrupted writes, are findings.
A listing that fails is an error finding (``listing-failed``), never an empty part of the repository.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from hadr_backup import engines
from hadr_backup.errors import StorageUnreadable, TransientStorageError
from hadr_backup.policy.model import Policy
from hadr_backup.repo import layout
from hadr_backup.repo.backups import TEMP_GRACE
from hadr_backup.repo.catalog import EXPIRING, FAILED, RUNNING, BackupEntry
from hadr_backup.repo.repository import Repository, open_repo
from hadr_backup.verify.findings import ERROR, WARNING, Report, read_through


def run_verify_repo(policy: Policy, *, deep: bool = False) -> Report:
    with open_repo(policy) as repo:
        report = Report("verify repo" + (" --deep" if deep else ""))
        for warning in repo.warnings:
            report.add(WARNING, "catalog", "catalog", warning)
        for entry in repo.catalog.entries:
            if entry.complete:
                _check_backup(repo, entry, report, deep)
            elif entry.state == RUNNING:
                report.add(WARNING, "backup-running", entry.id, "still running (or its process died)")
        _listing_check(report, layout.BACKUPS, partial(_check_unreferenced, repo, report))
        _listing_check(report, "(leftovers)", partial(_check_temporaries, repo, report, time.time()))
        for kind, source in engines.configured(policy):
            engine = engines.find(kind)
            if engine is not None:
                _listing_check(report, f"{kind} {source.name}", partial(engine.verify, repo, source.name, report, deep))
        return report


def _listing_check(report: Report, prefix: str, check: Callable[[], None]) -> None:
    """Run a check that lists ``prefix``; when the listing fails, say so instead of checking less."""
    try:
        check()
    except (StorageUnreadable, TransientStorageError) as error:
        report.add(ERROR, "listing-failed", prefix, f"{error.message}: what is stored there was not checked")


def _check_backup(repo: Repository, entry: BackupEntry, report: Report, deep: bool) -> None:
    report.count("backups")
    _check_description(repo, entry, report)
    for stored in entry.objects:
        report.count("objects")
        try:
            problem = repo.object_problem(stored)
        except (StorageUnreadable, TransientStorageError) as error:
            report.add(ERROR, "unreadable-object", entry.id, f"{stored.key}: {error.message}")
            continue
        if problem is not None:
            report.add(ERROR, problem[0], entry.id, problem[1])
        elif deep:
            read_through(repo, stored.key, stored.sha256, entry.id, report)
    for key in entry.needs:  # outside its own objects: WAL it is made consistent with, a parent's objects
        report.count("needed_objects")
        if _present(repo, key, entry.id, report) is False:
            report.add(
                ERROR, "needed-object-missing", entry.id, f"{key}, which it cannot be restored without, is missing"
            )


def _check_description(repo: Repository, entry: BackupEntry, report: Report) -> None:
    if _present(repo, layout.backup_description(entry.kind, entry.source, entry.id), entry.id, report) is False:
        report.add(
            WARNING,
            "description-missing",
            entry.id,
            "the backup has no backup.json (made by an older hadr): a lost catalog could not be rebuilt with it",
        )


def _present(repo: Repository, key: str, subject: str, report: Report) -> bool | None:
    """Whether ``key`` exists; None (and a finding) when the storage could not tell."""
    try:
        return repo.store.stat(key) is not None
    except (StorageUnreadable, TransientStorageError) as error:
        report.add(ERROR, "unreadable-object", subject, f"{key}: {error.message}")
        return None


def _check_unreferenced(repo: Repository, report: Report) -> None:
    """Every object under backups/ belongs to a catalog entry; a failed one's may wait for cleanup."""
    owners = {e.object_prefix: e for e in repo.catalog.entries}
    for info in repo.store.list(layout.BACKUPS):
        parsed = layout.parse_backup_key(info.key)
        owner = owners.get(layout.backup_prefix(*parsed[:3])) if parsed else None
        if owner is None:
            report.add(
                ERROR,
                "unreferenced-object",
                info.key,
                "no backup in the catalog accounts for it (a lost catalog entry? `hadr repair catalog` "
                "adds back backups that describe themselves)",
            )
        elif owner.state == FAILED:
            report.add(
                WARNING,
                "failed-backup-leftover",
                info.key,
                f"left by failed backup {owner.id}; the next backup or prune removes it",
            )
        elif owner.state == EXPIRING:
            report.add(
                WARNING,
                "expiring-backup-leftover",
                info.key,
                f"left by backup {owner.id}, which a prune expired; the next prune removes it",
            )


def _check_temporaries(repo: Repository, report: Report, now: float) -> None:
    """Leftovers of writes that never finished (temp files, incomplete multipart uploads)."""
    running = [e.object_prefix for e in repo.catalog.entries if e.state == RUNNING]
    for info in repo.store.list_temporary(""):
        report.count("temporary_objects")
        if any(info.key.startswith(prefix) for prefix in running):
            continue  # a backup still running writes it
        age = now - info.mtime
        level = ERROR if age > TEMP_GRACE else WARNING
        report.add(
            level,
            "leftover-temporary",
            info.key,
            f"an unfinished write ({info.temp_id}) {age:.0f} s old"
            + (
                "; a write still in progress, or a writer that died"
                if level == WARNING
                else "; its writer died: `hadr repair catalog` removes it"
            ),
        )
