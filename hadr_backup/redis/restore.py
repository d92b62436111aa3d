"""``hadr restore redis --to DIR``: the newest AOF generation whose window covers the target (aofwindows.py,
written by aofrestore.py), else a snapshot written to ``DIR/dump.rdb``; either is proven by loading it.

The snapshot is the newest complete one whose instant is at or before the target (or the one named, or
the newest); a target before the oldest exits 2 with the window before anything is written. The RDB is
checked against the catalog's SHA-256 while it streams to a temporary file, renamed into place and
fsynced (a failed check leaves no dump.rdb). A scratch redis-server started on DIR (no saving, no AOF,
a free port) must load it and hold the key counts per db the catalog recorded.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.errors import RestoreFailed, TargetUnreachable, UsageError
from hadr_backup.fsutil import durable_write
from hadr_backup.policy.model import Policy
from hadr_backup.postgres.restoredir import refuse_unsafe
from hadr_backup.redis import KIND
from hadr_backup.redis.aofrestore import AOF_DIR_NAME, AofChain, target_second, write_chain
from hadr_backup.redis.aofwindows import AofChains, load_chains
from hadr_backup.redis.backup import RDB_NAME
from hadr_backup.redis.backupmeta import RedisBackupMeta
from hadr_backup.redis.queuerun import RestoredQueueCheck
from hadr_backup.redis.scratch import ScratchServer
from hadr_backup.repo.repository import open_repo
from hadr_backup.timefmt import format_time, parse_target_time, rfc3339


@dataclass(frozen=True)
class RedisRestoreOptions:
    to: Path | None = None  # a directory, or
    into: str | None = None  # a running instance's URL (into.py)
    source: str | None = None
    backup_id: str | None = None
    latest: bool = False
    target_time: str | None = None
    force: bool = False
    scratch_bind: str = "127.0.0.1"  # --into: where the scratch server listens for the target


@dataclass
class RedisRestoreResult:
    backup_id: str | None  # the snapshot restored; None when restored from the AOF archive
    source: str
    reached: float  # the instant the restored data represents, to the second
    keys: dict[str, int]
    size: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    aof_name: str | None = None  # restored from the AOF archive: appendonlydir/<aof_name>.manifest
    files: list[str] = field(default_factory=list)
    to: str | None = None
    into: Any = None  # into.IntoReport: how the state reached a running instance

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
            "into": self.into.to_json() if self.into else None,
        }

    def render(self, out) -> None:
        if self.into:
            return self.into.render(self, out)
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
        self.render_warnings(out)

    def render_warnings(self, out) -> None:
        for warning in self.warnings:
            out.line(f"warning: {warning}")


def run_restore_redis(policy: Policy, options: RedisRestoreOptions, ui=None) -> RedisRestoreResult:
    """Restore a Redis source (from its AOF archive when it covers the target, else from a snapshot) to a
    directory and prove that redis-server loads it."""
    began = time.monotonic()
    one_target(options)
    # 1. refuse a directory that must not be written (touching nothing)
    refuse_unsafe(policy, options.to, force=options.force, discard=False)
    # 2. write the state at the target into it (a target outside the windows exits 2, before any write)
    assembled = assemble(policy, options, options.to, ui)
    # 3. prove it: a scratch server loads it and holds the keys recorded (a queue instance: its queues checked)
    queue_check = RestoredQueueCheck(policy.sources.redis_named(options.source))
    try:
        with assembled.scratch() as scratch:
            loaded = scratch.keys()
            queue_check.on(scratch)
    except RestoreFailed:
        if assembled.aof_name:
            shutil.rmtree(options.to / AOF_DIR_NAME, ignore_errors=True)
        raise
    result = assembled.result(loaded, began, to=str(options.to))
    result.warnings += queue_check.warnings
    return result


@dataclass
class Assembled:
    """The state at the target, written into a directory, before a scratch server proves it."""

    source: str
    directory: Path
    reached: float
    size: int
    files: list[str]
    backup_id: str | None = None  # the snapshot written; None for the AOF archive
    meta: RedisBackupMeta | None = None
    aof_name: str | None = None  # the AOF archive written: appendonlydir/<aof_name>.manifest

    def scratch(self, **settings) -> ScratchServer:
        return ScratchServer(self.directory, aof_name=self.aof_name, **settings)

    def check(self, loaded: dict[str, int]) -> list[str]:
        """A snapshot's key counts must be those recorded (a warning when the source changed meanwhile)."""
        return _compare(self.meta, loaded) if self.meta else []

    def result(self, loaded: dict[str, int], began: float, **where) -> RedisRestoreResult:
        return RedisRestoreResult(
            backup_id=self.backup_id,
            source=self.source,
            reached=self.reached,
            keys=loaded,
            size=self.size,
            seconds=time.monotonic() - began,
            warnings=self.check(loaded),
            aof_name=self.aof_name,
            files=self.files,
            **where,
        )


def assemble(policy: Policy, options: RedisRestoreOptions, directory: Path, ui=None) -> Assembled:
    """Write the state ``options`` ask for into ``directory``: the AOF archive when it covers the target,
    else a snapshot as dump.rdb, checked against the catalog's SHA-256 while it streams."""
    source = policy.sources.redis_named(options.source)
    with open_repo(policy) as repo:
        # 1. the newest AOF generation that covers the target (a target after them exits 2, before any write)
        chains = AofChains() if options.backup_id else load_chains(repo, source.name)
        chain, second = _aof_target(chains, options)
        if chain is not None:
            return _write_aof(repo, chain, second, directory, ui)
        # 2. else pick the snapshot, before anything is written
        try:
            entry = pick_snapshot(repo.catalog.select(kind=KIND, source=source.name, state="complete"), options)
        except TargetUnreachable as error:
            raise error.amend(prefix=f"{chains.describe()}; " if chains.chains else "") from None
        stored = entry.objects[0]
        if problem := repo.object_problem(stored):
            raise RestoreFailed(f"backup {entry.id} cannot be restored: {problem[1]}", hint="hadr verify repo")
        if ui is not None:
            ui.info(f"restoring snapshot {entry.id} of {format_time(entry.consistent_at)}")
        # 3. write dump.rdb, verified while it streams
        directory.mkdir(parents=True, exist_ok=True)
        size = durable_write(directory / RDB_NAME, repo.read_object(stored.key, sha256=stored.sha256))
    meta = RedisBackupMeta.of(entry)
    return Assembled(source.name, directory, math.floor(entry.consistent_at), size, [RDB_NAME], entry.id, meta)


def one_target(options: RedisRestoreOptions) -> None:
    if sum(map(bool, (options.backup_id, options.latest, options.target_time))) != 1:
        raise UsageError("give one of --backup ID, --latest or --target-time T")


def _aof_target(chains: AofChains, options: RedisRestoreOptions) -> tuple[AofChain | None, int | None]:
    """The generation that restores what ``options`` ask (None: a snapshot does), and the second to cut at
    (None: all of it). Not covered while a generation cannot be read: that one may be the one, so its error
    is the answer (exit 1 naming the piece). A target after the last archived annotation: exit 2."""
    if options.backup_id:
        return None, None
    second = None if options.latest else target_second(parse_target_time(options.target_time).timestamp())
    chain = chains.current if second is None else chains.covering(second)
    unreadable = chains.unreadable[-1] if chains.unreadable else None
    if chain is None and unreadable and (second is not None or unreadable[0].current):
        generation, error = unreadable
        raise error.amend(prefix=f"the AOF generation of base {generation.base} cannot be read: ")
    if chain is None and second is not None and chains.end is not None and second > chains.end:
        raise TargetUnreachable(
            f"{format_time(second)} is after the last archived instant; {chains.describe()}",
            hint="pick a target time within the window (hadr info), or archive first: hadr archive redis",
        )
    return chain, second


def _write_aof(repo, chain: AofChain, second: int | None, directory: Path, ui) -> Assembled:
    if ui is not None:
        generation = f"the generation of {chain.base.name}" + ("" if chain.current else ", closed by a rewrite,")
        ui.info(f"restoring {generation} of the AOF archive of {chain.source} up to {format_time(second or chain.end)}")
    reached, files = write_chain(repo, chain, directory, second)
    size = sum((directory / AOF_DIR_NAME / name).stat().st_size for name in files)
    return Assembled(chain.source, directory, reached, size, files, aof_name=chain.prefix)


def pick_snapshot(complete: list, options: RedisRestoreOptions):
    """The snapshot ``options`` name: by id, the newest, or the newest at or before the target time."""
    one_target(options)
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


def _compare(meta: RedisBackupMeta, loaded: dict[str, int]) -> list[str]:
    if loaded == meta.keys:
        return []
    message = f"the restored key counts {loaded} differ from those recorded {meta.keys}"
    if meta.keys_exact:
        raise RestoreFailed(message, hint="the snapshot may be damaged: hadr verify repo --deep")
    return [message + " (the source was written while the snapshot was taken)"]
