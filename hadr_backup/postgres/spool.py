"""Async WAL archiving: a spool and a background pusher that stores ready WAL files in parallel.

Async push works as pgBackRest's ``archive-async``: when PostgreSQL calls wal-push for a file that is
not stored yet, the call starts a background pusher (the hidden ``hadr wal-pusher``, unless one runs)
and waits. The pusher stores
every ``.ready`` file of ``pg_wal/archive_status`` in order, ``archive_workers`` at a time, and
writes a *done marker* for each file only after the store returned (fsync + rename, or a confirmed
PUT). A call returns 0 only when its file's marker exists, matches the file (device, inode, size,
mtime) and, for a local repository, the object exists: a file that is merely queued is never
acknowledged. A failed store leaves an *error marker*; the next call reports it (exit 1), removes it
and so lets the pusher try again.

Spool layout (``<spool_dir>/<source>``, by default ``pg_wal/.hadr-spool/<source>``); markers are
written with fsutil.durable_write::

    done/<name>     "<dev> <ino> <size> <mtime_ns> <stored bytes> <object key>"
    link/<name>-<sha256>  a hard link to the stored file (when the spool shares pg_wal's filesystem)
    error/<name>    why the last store of <name> failed
    pusher.lock     flock held by the running pusher; pusher.running exists while it runs
    pusher.log      the pusher's stdout and stderr (named by ``hadr info``)
    prefetch.log    the prefetcher's, when this cluster recovers (prefetch.py)

PostgreSQL runs archive_command once per file, serially, so the answer for a file the pusher already
stored must be cheap: ``archive_command_for`` puts a shell test (the hard link is this very file and,
locally, its object exists; repeated for a moment while a pusher runs) and then the lean
acknowledger (``walack.py``, run by ``python -I -S``) in front of the full command. The acknowledger
answers from the marker, starts the pusher or waits while it runs, and otherwise execs the full
``hadr wal-push``. Markers are dropped once PostgreSQL has acknowledged the file.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from hadr_backup.errors import HadrError, UsageError
from hadr_backup.postgres import wal, walack
from hadr_backup.postgres.archive import (
    ArchiveIdentity,
    WalPushResult,
    push_opening_repo,
    push_retrying,
    push_wal_file,
    read_wal_file,
)
from hadr_backup.postgres.background import PUSHER, helper_command, log, log_error, replace_text, spool_path, take_lock
from hadr_backup.postgres.walack import (
    WAIT_TIMEOUT,
    acknowledged,
    has_error,
    marker_text,
    pusher_running,
    wait_while_pushing,
)
from hadr_backup.repo.repository import open_repo
from hadr_backup.ui import plural

if TYPE_CHECKING:
    from hadr_backup.policy.model import Policy, PostgresSource, RepositoryConfig


LINGER = 1.0  # seconds a pusher waits for more ready files before it exits
STALE_TEMP = 3600.0  # seconds after which an unfinished marker (its writer was killed) is dropped


def push_through_spool(policy: Policy, source: PostgresSource, path: str | os.PathLike) -> WalPushResult:
    """The full wal-push in async mode: wait until the background pusher has stored ``path``."""
    started = time.monotonic()
    wal_path = os.path.abspath(path)
    name, pg_wal = os.path.basename(wal_path), os.path.dirname(wal_path)
    if not wal.is_wal_file(name):
        raise UsageError(f"{path} is not a WAL file", hint="archive_command must pass %p")
    spool, repo_root = spool_path(source, pg_wal), policy.repository.path
    fields = acknowledged(spool, wal_path, repo_root)
    if fields is None:
        _raise_stored_error(spool, name)
        if not pusher_running(spool):
            start_pusher(policy, source, pg_wal, spool)
        wait_while_pushing(spool, wal_path, repo_root, started + WAIT_TIMEOUT)
        fields = acknowledged(spool, wal_path, repo_root)
    if fields is None:
        _raise_stored_error(spool, name)
        # the pusher stopped (or stalled) without storing this file: store it here, as sync mode does
        outcome = push_opening_repo(policy, source.name, read_wal_file(wal_path))
        return WalPushResult(
            source.name,
            name,
            "stored",
            outcome.key,
            outcome.sha256,
            outcome.raw_size,
            outcome.stored_size,
            time.monotonic() - started,
            [],
            outcome.attempts,
        )
    return WalPushResult(
        source.name,
        name,
        "stored by the async pusher",
        fields[5],
        fields[5].rsplit("-", 1)[1],
        int(fields[2]),
        int(fields[4]),
        time.monotonic() - started,
        [],
    )


def _raise_stored_error(spool: str, name: str) -> None:
    path = os.path.join(spool, "error", name)
    try:
        with open(path) as handle:
            message = handle.read().strip()
    except FileNotFoundError:
        return
    os.unlink(path)  # reported once; the next call makes the pusher try again
    raise HadrError(f"the async pusher could not store {name}: {message}")


def start_pusher(policy: Policy, source: PostgresSource, pg_wal: str, spool: str) -> None:
    """Start a detached pusher and give it a moment to take its lock."""
    walack.start_pusher(spool, helper_command(policy, PUSHER, source), pg_wal)


def run_pusher(policy: Policy, source: PostgresSource, pg_wal: str) -> int:
    """Store every ready WAL file, ``archive_workers`` at a time, until none is left; return how many."""
    from concurrent.futures import ThreadPoolExecutor  # 3 ms (with logging) that a sync wal-push never needs

    spool = spool_path(source, pg_wal)
    for sub in ("done", "error", "link"):
        os.makedirs(os.path.join(spool, sub), exist_ok=True)
    lock = take_lock(os.path.join(spool, "pusher.lock"))
    if lock is None:
        return 0  # another pusher runs
    # the workers store files in parallel, so each compresses its file on one thread
    policy = replace(policy, compression=replace(policy.compression, threads=1))
    running = os.path.join(spool, "pusher.running")  # for the shell test of ack_command
    try:
        replace_text(running, f"{os.getpid()}\n")
        with (
            open_repo(policy, write=True, lock=False, catalog=False) as repo,
            ThreadPoolExecutor(source.archive_workers, thread_name_prefix="hadr-push") as pool,
        ):
            pusher = _Pusher(repo, source.name, spool, pg_wal, policy.repository)
            stored = pusher.drain(pool, capacity=source.archive_workers * 2)
        log(f"pusher: stored {plural(stored, 'file')}, up to {pusher.most_at_once} at once")
        return stored
    finally:
        if os.path.exists(running):
            os.unlink(running)
        os.close(lock)


class _Pusher:
    def __init__(self, repo, source: str, spool: str, pg_wal: str, repository: RepositoryConfig):
        self.repo, self.source, self.spool, self.pg_wal = repo, source, spool, pg_wal
        self.repo_root, self.repository = repository.path, repository
        self.identity = None  # the archive identity, once checked
        self.stored: set[str] = set()  # names this pusher stored (and marked)
        self.at_once = self.most_at_once = 0  # stores running now, and the most seen at once
        self._count_lock = threading.Lock()

    def drain(self, pool, capacity: int) -> int:
        """Keep ``capacity`` stores queued on ``pool`` until no ready file is left for LINGER seconds."""
        from concurrent.futures import FIRST_COMPLETED, wait

        in_flight: dict = {}
        stored, idle_since, pruned = 0, time.monotonic(), 0.0
        while True:
            if time.monotonic() - pruned > 1.0:
                _prune_markers(self.spool, self.pg_wal)
                pruned = time.monotonic()
            for name in self.pending(exclude=in_flight)[: max(0, capacity - len(in_flight))]:
                in_flight[name] = pool.submit(self.push, name)
            if not in_flight:
                if time.monotonic() - idle_since > LINGER:
                    _prune_markers(self.spool, self.pg_wal)
                    return stored
                time.sleep(0.02)
                continue
            finished, _ = wait(list(in_flight.values()), timeout=0.05, return_when=FIRST_COMPLETED)
            for name in [n for n, f in in_flight.items() if f in finished]:
                stored += in_flight.pop(name).result()
            idle_since = time.monotonic()

    def pending(self, exclude) -> list[str]:
        """Ready files without a marker: history files first, then in name (= WAL) order."""
        try:
            entries = os.listdir(os.path.join(self.pg_wal, "archive_status"))
        except FileNotFoundError:
            return []
        names = [
            e[:-6] for e in entries if e.endswith(".ready") and e[:-6] not in exclude and e[:-6] not in self.stored
        ]
        names = [
            n
            for n in names
            if not has_error(self.spool, n)
            and not acknowledged(self.spool, os.path.join(self.pg_wal, n), self.repo_root)
        ]
        return sorted(names, key=lambda n: (not n.endswith(".history"), n))

    def push(self, name: str) -> int:
        with self._count_lock:
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            return self._push(name)
        finally:
            with self._count_lock:
                self.at_once -= 1

    def _push(self, name: str) -> int:
        path = os.path.join(self.pg_wal, name)
        try:
            st = os.stat(path)
            wal_file = read_wal_file(path)
            store = partial(push_wal_file, self.repo, self.source, wal_file, identity=self.identity)
            outcome = push_retrying(
                store, self.repository.retry, name, self.repository.display, on_retry=partial(_log_retry, name)
            )
            if wal_file.header is not None:
                self.identity = ArchiveIdentity.of(wal_file.header)
        except FileNotFoundError:
            return 0  # recycled meanwhile: PostgreSQL no longer needs it archived
        except Exception as error:
            replace_text(os.path.join(self.spool, "error", name), f"{error}\n")
            log_error(f"{name}: {error}")
            return 0
        replace_text(os.path.join(self.spool, "done", name), marker_text(st, outcome.stored_size, outcome.key))
        _link_marker(path, os.path.join(self.spool, "link", f"{name}-{outcome.sha256}"))
        self.stored.add(name)
        return 1


def _log_retry(name: str, error: Exception, delay: float) -> None:
    log(f"{name}: {getattr(error, 'message', error)}; retrying in {delay:.1f}s")


def _link_marker(path: str, link: str) -> None:
    """A hard link to the stored file, for the shell test of ``ack_command``."""
    try:
        os.link(path, link)
    except FileExistsError:  # left by an earlier pusher: it may pin another file
        os.unlink(link)
        _link_marker(path, link)
    except OSError:  # the spool is on another filesystem: the lean acknowledger answers instead
        pass


def _prune_markers(spool: str, pg_wal: str) -> None:
    """Drop the markers of files PostgreSQL has acknowledged or removed (a hard link would pin the
    file, and a name can come back after a new initdb), and unfinished markers of killed writers."""
    status = os.path.join(pg_wal, "archive_status")
    for folder, name_of in (("done", lambda e: e), ("link", lambda e: e.rsplit("-", 1)[0])):
        for entry in os.listdir(os.path.join(spool, folder)):
            path = os.path.join(spool, folder, entry)
            try:
                if entry.startswith("."):  # a marker being written (durable_write's temporary name)
                    if time.time() - os.path.getmtime(path) > STALE_TEMP:
                        os.unlink(path)
                elif not os.path.exists(os.path.join(status, name_of(entry) + ".ready")):
                    os.unlink(path)
            except FileNotFoundError:
                pass
