"""hadr verify repo: every object present, sizes and checksums right, decryptable; WAL continuity.

The quick pass checks presence and sizes against the catalog; ``--deep`` reads every object back
through the pipeline (authenticating every chunk and comparing the SHA-256 the catalog recorded).
A listing that fails is an error finding (``listing-failed``), never an empty part of the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from hadr_backup.errors import HadrError, IntegrityError, StorageUnreadable, TransientStorageError
from hadr_backup.policy.model import Policy
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.repo.repository import Repository, open_repo
from hadr_backup.verify.findings import ERROR, WARNING, Report


def run_verify_repo(policy: Policy, *, deep: bool = False) -> Report:
    with open_repo(policy) as repo:
        report = Report("verify repo" + (" --deep" if deep else ""))
        for warning in repo.warnings:
            report.add(WARNING, "catalog", "catalog", warning)
        for entry in repo.catalog.entries:
            if entry.complete:
                _check_backup(repo, entry, report, deep)
            elif entry.state == "running":
                report.add(WARNING, "backup-running", entry.id, "still running (or its process died)")
        _listing_check(report, "backups/", partial(_check_unreferenced, repo, report))
        for source in policy.sources.postgres:
            _listing_check(report, f"wal/{source.name}/", partial(_check_wal, repo, source.name, report, deep))
        return report


def _listing_check(report: Report, prefix: str, check: Callable[[], None]) -> None:
    """Run a check that lists ``prefix``; when the listing fails, say so instead of checking less."""
    try:
        check()
    except (StorageUnreadable, TransientStorageError) as error:
        report.add(ERROR, "listing-failed", prefix, f"{error.message}: what is stored there was not checked")


def _check_backup(repo: Repository, entry: BackupEntry, report: Report, deep: bool) -> None:
    report.count("backups")
    for stored in entry.objects:
        report.count("objects")
        try:
            info = repo.store.stat(stored.key)
        except (StorageUnreadable, TransientStorageError) as error:
            report.add(ERROR, "unreadable-object", entry.id, f"{stored.key}: {error.message}")
            continue
        if info is None:
            report.add(ERROR, "object-missing", entry.id, f"{stored.key} is missing")
            continue
        if info.size != stored.stored_size:
            report.add(ERROR, "size-mismatch", entry.id,
                       f"{stored.key} is {info.size} bytes, the catalog says {stored.stored_size}")
            continue
        if deep:
            _read_through(repo, stored.key, stored.sha256, entry.id, report)


def _read_through(repo: Repository, key: str, sha256: str | None, subject: str, report: Report) -> None:
    try:
        for _ in repo.read_object(key, sha256=sha256):
            pass
    except IntegrityError as error:
        report.add(ERROR, "corrupt-object", subject, f"{key}: {error.message}")
    except HadrError as error:
        report.add(ERROR, "unreadable-object", subject, f"{key}: {error.message}")


def _check_unreferenced(repo: Repository, report: Report) -> None:
    referenced = {o.key for e in repo.catalog.entries for o in e.objects}
    prefixes = {f"backups/{e.kind}/{e.source}/{e.id}/" for e in repo.catalog.entries}
    for info in repo.store.list("backups/"):
        if info.key not in referenced and not any(info.key.startswith(p) for p in prefixes):
            report.add(WARNING, "unreferenced-object", info.key, "not part of any backup in the catalog")


def _check_wal(repo: Repository, source: str, report: Report, deep: bool) -> None:
    from hadr_backup.verify.walchain import check_wal_chain

    for finding in check_wal_chain(repo, source):
        report.findings.append(finding)
    if deep:
        for info in repo.store.list(f"wal/{source}/"):
            if info.key.endswith(".json"):
                continue
            report.count("wal objects")
            _read_through(repo, info.key, None, info.key.rsplit("/", 1)[-1], report)
