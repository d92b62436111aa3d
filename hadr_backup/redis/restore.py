"""``hadr restore redis --to DIR``: the AOF archive when it covers the target (aofrestore.py), else a
snapshot written to ``DIR/dump.rdb``; either is proven by loading it.

The snapshot is the newest complete one whose instant is at or before the target (or the one named, or
the newest); a target before the oldest exits 2 with the window before anything is written. The RDB is
checked against the catalog's SHA-256 while it streams to a temporary file, renamed into place and
fsynced (a failed check leaves no dump.rdb). A scratch redis-server started on DIR (no saving, no AOF,
a free port) must load it and hold the key counts per db the catalog recorded.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.errors import RestoreFailed, TargetUnreachable, UsageError
from hadr_backup.fsutil import durable_write
from hadr_backup.policy.model import Policy
from hadr_backup.postgres.restoredir import refuse_unsafe
from hadr_backup.procs import free_port, log_tail, wait_until
from hadr_backup.redis import KIND
from hadr_backup.redis.aofrestore import AOF_DIR_NAME, AofChain, load_chain, target_second, write_chain
from hadr_backup.redis.backup import RDB_NAME
from hadr_backup.redis.backupmeta import RedisBackupMeta
from hadr_backup.redis.queuerun import RestoredQueueCheck
from hadr_backup.redis.wire import Address, Connection, RedisError, keys_per_db, parse_info
from hadr_backup.repo.repository import open_repo
from hadr_backup.timefmt import format_time, parse_target_time, rfc3339

LOAD_TIMEOUT = 600.0


@dataclass(frozen=True)
class RedisRestoreOptions:
    to: Path
    source: str | None = None
    backup_id: str | None = None
    latest: bool = False
    target_time: str | None = None
    force: bool = False


@dataclass
class RedisRestoreResult:
    backup_id: str | None  # the snapshot restored; None when restored from the AOF archive
    source: str
    to: str
    reached: float  # the instant the restored data represents, to the second
    keys: dict[str, int]
    size: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    aof_name: str | None = None  # restored from the AOF archive: appendonlydir/<aof_name>.manifest
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "from": "aof" if self.aof_name else "snapshot",
            "source": self.source,
            "to": self.to,
            "files": self.files,
            "reached": rfc3339(self.reached),
            "keys": self.keys,
            "size": self.size,
            "seconds": self.seconds,
            "warnings": self.warnings,
        }

    def render(self, out) -> None:
        if self.aof_name:
            what = f"the AOF archive of {self.source} to {self.to}/{AOF_DIR_NAME} ({', '.join(self.files)})"
            reached = "the last AOF #TS annotation at or before the target, to the second"
            start = f"redis-server --dir {self.to} --appendonly yes --appenddirname {AOF_DIR_NAME}"
            start += f" --appendfilename {self.aof_name}"
            verified = "loaded by a scratch redis-server"
        else:
            what = f"{self.backup_id} of {self.source} to {self.to}/{RDB_NAME}"
            reached = "the snapshot's instant, to the second"
            start = f"redis-server --dir {self.to} --dbfilename {RDB_NAME}"
            verified = "loaded by a scratch redis-server, key counts per db as recorded"
        out.kv(
            [
                ("restored", what),
                ("reached", f"{format_time(self.reached)} ({reached})"),
                ("keys", ", ".join(f"{db}: {n}" for db, n in self.keys.items()) or "none"),
                ("verified", verified),
                ("start it", start),
            ]
        )
        for warning in self.warnings:
            out.line(f"warning: {warning}")


def run_restore_redis(policy: Policy, options: RedisRestoreOptions, ui=None) -> RedisRestoreResult:
    """Restore a Redis source (from its AOF archive when it covers the target, else from a snapshot) to a
    directory and prove that redis-server loads it."""
    began = time.monotonic()
    source = policy.sources.redis_named(options.source)
    queue_check = RestoredQueueCheck(source)  # run by the scratch server that proves the restore
    _one_target(options)
    # 1. refuse a directory that must not be written (touching nothing)
    refuse_unsafe(policy, options.to, force=options.force, discard=False)
    with open_repo(policy) as repo:
        # 2. the AOF archive when it covers the target (a target after it exits 2, before any write)
        chain = None if options.backup_id else load_chain(repo, source.name)
        use_aof, second = _aof_target(chain, options)
        if use_aof:
            return _restore_aof(repo, chain, second, options, ui, began, queue_check)
        # 3. else pick the snapshot, before anything is written
        try:
            entry = pick_snapshot(repo.catalog.select(kind=KIND, source=source.name, state="complete"), options)
        except TargetUnreachable as error:
            raise error.amend(prefix=f"{chain.window.describe()}; " if chain else "") from None
        stored = entry.objects[0]
        if problem := repo.object_problem(stored):
            raise RestoreFailed(f"backup {entry.id} cannot be restored: {problem[1]}", hint="hadr verify repo")
        meta = RedisBackupMeta.of(entry)
        if ui is not None:
            ui.info(f"restoring snapshot {entry.id} of {format_time(entry.consistent_at)} to {options.to}")
        # 4. write dump.rdb, verified while it streams
        options.to.mkdir(parents=True, exist_ok=True)
        size = durable_write(options.to / RDB_NAME, repo.read_object(stored.key, sha256=stored.sha256))
    # 5. prove it: a scratch server loads it and holds the keys recorded
    loaded = load_and_count(options.to, inspect=queue_check)
    warnings = _compare(meta, loaded) + queue_check.warnings
    return RedisRestoreResult(
        backup_id=entry.id,
        source=source.name,
        to=str(options.to),
        reached=math.floor(entry.consistent_at),
        keys=loaded,
        size=size,
        seconds=time.monotonic() - began,
        warnings=warnings,
        files=[RDB_NAME],
    )


def _one_target(options: RedisRestoreOptions) -> None:
    if sum(map(bool, (options.backup_id, options.latest, options.target_time))) != 1:
        raise UsageError("give one of --backup ID, --latest or --target-time T")


def _aof_target(chain: AofChain | None, options: RedisRestoreOptions) -> tuple[bool, int | None]:
    """Whether the AOF chain restores what ``options`` ask, and the second to cut at (None: all of it).
    A target after the last archived annotation is outside the window: exit 2."""
    if chain is None or options.backup_id:
        return False, None
    if options.latest:
        return True, None
    second = target_second(parse_target_time(options.target_time).timestamp())
    if second > chain.end:
        raise TargetUnreachable(
            f"{format_time(second)} is after the last archived instant; {chain.window.describe()}",
            hint="pick a target time within the window (hadr info), or archive first: hadr archive redis",
        )
    return chain.covers(second), second


def _restore_aof(
    repo, chain: AofChain, second: int | None, options, ui, began: float, queue_check
) -> RedisRestoreResult:
    if ui is not None:
        ui.info(f"restoring the AOF archive of {chain.source} up to {format_time(second or chain.end)}")
    reached, files = write_chain(repo, chain, options.to, second)
    try:
        loaded = load_and_count(options.to, aof_name=chain.prefix, inspect=queue_check)
    except RestoreFailed:
        shutil.rmtree(options.to / AOF_DIR_NAME, ignore_errors=True)
        raise
    directory = options.to / AOF_DIR_NAME
    return RedisRestoreResult(
        backup_id=None,
        source=chain.source,
        to=str(options.to),
        reached=reached,
        keys=loaded,
        size=sum((directory / name).stat().st_size for name in files),
        seconds=time.monotonic() - began,
        aof_name=chain.prefix,
        files=files,
        warnings=queue_check.warnings,
    )


def pick_snapshot(complete: list, options: RedisRestoreOptions):
    """The snapshot ``options`` name: by id, the newest, or the newest at or before the target time."""
    _one_target(options)
    if options.backup_id:
        found = [e for e in complete if e.id == options.backup_id]
        if not found:
            raise UsageError(f"no complete Redis snapshot {options.backup_id!r} of this source", hint="hadr list")
        return found[0]
    if not complete:
        raise TargetUnreachable("there is no complete Redis snapshot of this source", hint="hadr backup redis")
    by_instant = sorted(complete, key=lambda e: e.consistent_at)
    if options.latest:
        return by_instant[-1]
    target = parse_target_time(options.target_time).timestamp()
    before = [e for e in by_instant if e.consistent_at <= target]
    if not before:
        raise TargetUnreachable(
            f"{format_time(target)} is before the oldest snapshot: restorable to the instants of its "
            f"{len(by_instant)} snapshots, {format_time(by_instant[0].consistent_at)} .. "
            f"{format_time(by_instant[-1].consistent_at)}",
            hint="pick a target time within the window (hadr info)",
        )
    return before[-1]


def load_and_count(directory: Path, aof_name: str | None = None, inspect=None) -> dict[str, int]:
    """Start a scratch redis-server on ``directory`` (no saving), wait until it has loaded dump.rdb (or,
    given ``aof_name``, the multi-part AOF ``appendonlydir/<aof_name>.manifest``), and return its keys
    per db; RestoreFailed when it cannot load it. ``inspect(conn)`` may look at the loaded data first."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="hadr-redis-scratch-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--dbfilename", RDB_NAME, "--save", "", "--logfile", str(log_path),
    ]  # fmt: skip
    aof = ["--appendonly", "yes", "--appenddirname", AOF_DIR_NAME, "--appendfilename", aof_name] if aof_name else []
    argv += aof or ["--appendonly", "no"]
    loaded_from = directory / AOF_DIR_NAME / f"{aof_name}.manifest" if aof_name else directory / RDB_NAME
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_until(lambda: _loaded(port) or process.poll() is not None, LOAD_TIMEOUT, 0.05) or process.poll():
            raise RestoreFailed(f"a scratch redis-server could not load {loaded_from}", hint=log_tail(log_path))
        with Connection(Address("127.0.0.1", port, None, None, False)) as conn:
            counts = keys_per_db(parse_info(conn.call("INFO", "keyspace")))
            if inspect is not None:
                inspect(conn)
            conn.send("SHUTDOWN", "NOSAVE")
        process.wait(timeout=30)
        return counts
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.unlink(log_path)


def _loaded(port: int) -> bool:
    try:
        with Connection(Address("127.0.0.1", port, None, None, False), timeout=2) as conn:
            return conn.call("PING") == "PONG"
    except RedisError:  # not listening yet, or -LOADING
        return False


def _compare(meta: RedisBackupMeta, loaded: dict[str, int]) -> list[str]:
    if loaded == meta.keys:
        return []
    message = f"the restored key counts {loaded} differ from those recorded {meta.keys}"
    if meta.keys_exact:
        raise RestoreFailed(message, hint="the snapshot may be damaged: hadr verify repo --deep")
    return [message + " (the source was written while the snapshot was taken)"]
