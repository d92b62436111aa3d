"""The life of a backup entry in a catalog that several writers share.

    begin   running, with host, pid and a heartbeat the keepalive thread renews
    finish  the backup describes itself (``backup.json`` beside its objects), then reads complete
    fail    failed, then its objects and the leftovers of its interrupted writes are removed

A ``running`` entry is judged interrupted only from its own heartbeat (``catalog.interrupted``):
never because another process took the lock. The next writer marks it failed and cleans it up.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

from hadr_backup.errors import HadrError, RepositoryError
from hadr_backup.procs import pid_alive
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import COMPLETE, FAILED, RUNNING, BackupEntry, Catalog, StoredObject, interrupted
from hadr_backup.repo.lock import CLOCK_MARGIN
from hadr_backup.ui import plural

if TYPE_CHECKING:
    from hadr_backup.repo.repository import Repository

STALE_LEASES = 3  # a heartbeat older than this many lock TTLs marks its backup interrupted
TEMP_GRACE = 600.0  # seconds a leftover of a write (temp file, multipart upload) may still be in progress


class BackupAbandoned(RepositoryError):
    """The backup was marked failed by another writer while it ran (its heartbeat stopped)."""


def _copy(entry: BackupEntry) -> BackupEntry:
    return BackupEntry.from_json(entry.to_json())


def begin_backup(repo: Repository, kind: str, source: str, meta: dict | None = None) -> BackupEntry:
    from hadr_backup.repo.catalog import new_backup_id

    backup_id = new_backup_id(kind)
    entry = BackupEntry(
        id=backup_id,
        kind=kind,
        source=source,
        meta=dict(meta or {}),
        prefix=layout.backup_prefix(kind, source, backup_id),
        heartbeat_at=time.time(),
    )
    repo.update_catalog(lambda catalog: None if catalog.get(entry.id) else catalog.add(_copy(entry)))
    repo.own_running.add(entry.id)
    return entry


def finish_backup(repo: Repository, entry: BackupEntry, objects: list[StoredObject], meta: dict | None) -> None:
    entry.objects = list(objects)
    entry.raw_size = sum(o.raw_size for o in objects)
    entry.stored_size = sum(o.stored_size for o in objects)
    entry.meta.update(meta or {})
    entry.stopped_at = entry.stopped_at or time.time()
    entry.state, entry.heartbeat_at = COMPLETE, time.time()
    # 1. the backup describes itself, so that a lost catalog can be rebuilt from the repository
    repo.put_json(layout.backup_description(entry.kind, entry.source, entry.id), entry.to_json())

    # 2. only then does the catalog say complete
    def complete(catalog: Catalog) -> None:
        current = catalog.get(entry.id)
        if current is not None and current.state == FAILED:
            raise BackupAbandoned(
                f"backup {entry.id} was marked failed while it ran ({current.error})",
                hint="its heartbeat did not reach the repository in time; run it again",
            )
        catalog.remove(entry.id)
        catalog.add(_copy(entry))

    try:
        repo.update_catalog(complete)
    finally:
        repo.own_running.discard(entry.id)


def fail_backup(repo: Repository, entry: BackupEntry, reason: str) -> None:
    entry.state, entry.error = FAILED, reason
    entry.stopped_at = entry.stopped_at or time.time()

    def failed(catalog: Catalog) -> None:
        current = catalog.get(entry.id)
        if current is not None and current.state == RUNNING:
            current.state, current.error, current.stopped_at = FAILED, reason, entry.stopped_at

    try:
        repo.update_catalog(failed, lock_lost_ok=True)  # failing its own entry is safe without the lock
    finally:
        repo.own_running.discard(entry.id)
    if repo.lock is None or not repo.lock.lost:
        clean_failed(repo)


def fail_interrupted(repo: Repository, now: float | None = None) -> None:
    """Mark failed every running entry whose heartbeat stopped; clean up every failed entry."""
    now = time.time() if now is None else now
    stale_after = STALE_LEASES * repo.policy.repository.lock_ttl + CLOCK_MARGIN

    def mark(catalog: Catalog) -> list[str]:
        found = interrupted(
            catalog.entries, now=now, host=socket.gethostname(), stale_after=stale_after, alive=pid_alive
        )
        for entry in found:
            beat = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.heartbeat_at or entry.started_at))
            entry.state, entry.stopped_at = FAILED, now
            entry.error = (
                f"interrupted (pid {entry.pid} on {entry.host or 'an unknown host'} is gone; last heartbeat {beat} UTC)"
            )
        return [entry.id for entry in found]

    if any(e.state == RUNNING for e in repo.catalog.entries):
        marked = repo.update_catalog(mark)
        if marked:
            repo.warnings.append(f"marked {plural(len(marked), 'interrupted backup')} as failed: {', '.join(marked)}")
    clean_failed(repo)


def clean_failed(repo: Repository) -> None:
    """Remove the objects and leftovers of failed entries, then record them as cleaned."""
    cleaned = []
    for entry in [e for e in repo.catalog.entries if e.state == FAILED and not e.cleaned]:
        prefix = entry.object_prefix
        try:
            for info in list(repo.store.list_temporary(prefix)):
                repo.store.delete_temporary(info)
            for info in list(repo.store.list(prefix)):
                repo.store.delete(info.key)
        except HadrError as error:  # the entry says failed either way; the next writer tries again
            repo.warnings.append(f"could not remove what failed backup {entry.id} left: {error.message}")
            continue
        cleaned.append(entry.id)
    if cleaned:

        def mark_cleaned(catalog: Catalog) -> None:
            for entry in catalog.entries:
                if entry.id in cleaned:
                    entry.cleaned = True

        repo.update_catalog(mark_cleaned)


def heartbeat(repo: Repository, now: float | None = None) -> None:
    """Renew the heartbeat of the backups this process is running."""
    own = set(repo.own_running)
    if not own:
        return
    now = time.time() if now is None else now

    def beat(catalog: Catalog) -> None:
        for entry in catalog.entries:
            if entry.id in own and entry.state == RUNNING:
                entry.heartbeat_at = now

    repo.update_catalog(beat)


class Keepalive:
    """A thread that renews the lock and the heartbeats every ``interval`` seconds while a writer works."""

    def __init__(self, repo: Repository, interval: float):
        self.repo, self.interval = repo, max(interval, 0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hadr-keepalive", daemon=True)

    def start(self) -> Keepalive:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.repo.lock.renew()
                if not self.repo.lock.lost:
                    heartbeat(self.repo)
            except Exception as error:  # a missed beat is retried next interval; the run itself decides
                self.repo.warnings.append(f"keepalive: {error}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
