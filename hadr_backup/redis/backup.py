"""``hadr backup redis``: an RDB snapshot fetched over the replication protocol into the repository.

No access to the Redis host's disk is needed: the server forks and sends the RDB to this client as it
would to a replica (snapshot.py), and the bytes flow through the pipeline (zstd, AES-GCM, SHA-256)
straight into the repository. A second connection reads INFO and the server's clock before SYNC and
once the RDB begins to arrive (the fork is done by then): that instant is what the snapshot represents.
SYNC goes out first; the repository opens on a thread while the server forks and starts the RDB.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from hadr_backup.policy.model import Policy
from hadr_backup.redis import KIND
from hadr_backup.redis.backupmeta import RedisBackupMeta
from hadr_backup.redis.snapshot import SnapshotFailed, Transfer, rdb_chunks, start_sync, wait_preamble
from hadr_backup.redis.wire import Address, Connection, RedisError, keys_per_db, parse_info
from hadr_backup.repo.repository import open_repo
from hadr_backup.timefmt import format_time, rfc3339

RDB_NAME = "dump.rdb"
DELAY_HINT = "CONFIG SET repl-diskless-sync-delay 0 (and in redis.conf) makes snapshots start at once"


@dataclass
class RedisBackupResult:
    backup_id: str
    source: str
    state: str
    redis_version: str
    rdb_version: int | None
    role: str
    form: str
    keys: dict[str, int]
    master_repl_offset: int
    snapshot_at: float
    raw_size: int
    stored_size: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "snapshot_at": rfc3339(self.snapshot_at)}

    def render(self, out) -> None:
        keys = ", ".join(f"{db}: {n}" for db, n in self.keys.items()) or "none"
        out.kv(
            [
                ("backup", self.backup_id),
                ("source", self.source),
                ("state", self.state),
                ("redis", f"{self.redis_version} ({self.role}), RDB version {self.rdb_version}"),
                ("snapshot of", f"{format_time(self.snapshot_at)} ({self.form} transfer)"),
                ("keys", keys),
                ("offset", self.master_repl_offset),
                ("size", f"{self.raw_size / 2**20:.1f} MiB, stored {self.stored_size / 2**20:.1f} MiB"),
                ("took", f"{self.seconds:.1f} s"),
            ]
        )
        for warning in self.warnings:
            out.line(f"warning: {warning}")


@dataclass
class _Server:
    """The control connection's view: INFO before SYNC, the server clock, the diskless delay."""

    info: dict[str, str]
    clock_offset: float  # server clock minus this host's
    delay: int | None  # repl-diskless-sync-delay when diskless sync applies, None otherwise / unknown

    def now(self, local: float) -> float:
        return local + self.clock_offset


def run_backup_redis(policy: Policy, source_name: str | None = None, ui=None) -> RedisBackupResult:
    """Take one RDB snapshot of a Redis source into the repository."""
    source = policy.sources.redis_named(source_name)
    address = Address.of_source(source)
    began = time.monotonic()
    # 1. learn about the server on a control connection (fails early on a wrong password)
    with Connection(address) as control, Connection(address) as replica:
        server = _inspect(control)
        warnings = _delay_warning(server, ui)
        transfer, after = Transfer(), {}
        sync_at = server.now(time.time())
        start_sync(replica)
        # 2. while the server forks and starts the RDB, the repository opens (on a thread) and records the
        #    backup as running; the preamble's arrival here fixes the instant the snapshot represents
        with ExitStack() as stack, ThreadPoolExecutor(1) as pool:
            opening = pool.submit(_open_and_begin, stack, policy, source.name, server)
            try:
                preamble = wait_preamble(replica, transfer, lambda: after.update(_keyspace(control)))
            except BaseException as error:
                _abandon(opening, error)
                raise
            repo, entry = opening.result()
            with repo.recording(entry):
                # 3. stream the RDB into the repository
                transfer.stored = repo.put_object(
                    entry.object_prefix + RDB_NAME, rdb_chunks(replica, transfer, preamble)
                )
                if not transfer.ended:
                    raise SnapshotFailed("the RDB stream ended before its end")
                snapshot_at = server.now(transfer.header_at)
                meta = _meta(entry, server, transfer, after, sync_at, snapshot_at)
                # 4. only now is it restorable
                repo.finish_backup(entry, [transfer.stored], meta.to_meta(), consistent_at=snapshot_at)
    return RedisBackupResult(
        backup_id=entry.id,
        source=source.name,
        state=entry.state,
        redis_version=meta.redis_version,
        rdb_version=meta.rdb_version,
        role=meta.role,
        form=meta.form,
        keys=meta.keys,
        master_repl_offset=meta.master_repl_offset,
        snapshot_at=snapshot_at,
        raw_size=entry.raw_size,
        stored_size=entry.stored_size,
        seconds=time.monotonic() - began,
        warnings=warnings + (["the key counts changed while the snapshot was taken"] if not meta.keys_exact else []),
    )


def _open_and_begin(stack: ExitStack, policy: Policy, source: str, server: _Server):
    """Open the repository for writing (closed with ``stack``) and record the backup as running."""
    repo = stack.enter_context(open_repo(policy, write=True))
    return repo, repo.begin_backup(KIND, source, {"redis_version": server.info.get("redis_version", "")})


def _abandon(opening: Future, error: BaseException) -> None:
    """The snapshot failed before it began: the backup, once recorded as running, is failed."""
    try:
        repo, entry = opening.result()
    except Exception:
        return  # the repository did not open: nothing was recorded (the snapshot's error is the one said)
    repo.abandon_backup(entry, error)


def _keyspace(control: Connection) -> dict[str, str]:
    return parse_info(control.call("INFO", "keyspace"))


def _inspect(control: Connection) -> _Server:
    info = parse_info(control.call("INFO", "server") + control.call("INFO", "replication"))
    info.update(parse_info(control.call("INFO", "keyspace")))
    seconds, micros = control.call("TIME")
    offset = int(seconds) + int(micros) / 1e6 - time.time()
    return _Server(info, offset, _diskless_delay(control))


def _diskless_delay(control: Connection) -> int | None:
    try:
        settings = control.call("CONFIG", "GET", "repl-diskless-sync*")
    except RedisError:  # CONFIG may be refused to this user: then nothing is said about the delay
        return None
    values = dict(zip(settings[::2], settings[1::2], strict=False))
    if values.get("repl-diskless-sync") != "yes":
        return None
    return int(values.get("repl-diskless-sync-delay", "0"))


def _delay_warning(server: _Server, ui) -> list[str]:
    if not server.delay:
        return []
    note = f"repl-diskless-sync-delay is {server.delay} s: the server waits that long before the snapshot starts"
    if ui is not None:
        ui.info(f"{note}; {DELAY_HINT}")
    return [f"{note} ({DELAY_HINT})"]


def _meta(
    entry, server: _Server, transfer: Transfer, after: dict, sync_at: float, snapshot_at: float
) -> RedisBackupMeta:
    before = keys_per_db(server.info)
    return RedisBackupMeta(
        rdb_object=entry.object_prefix + RDB_NAME,
        redis_version=server.info.get("redis_version", ""),
        rdb_version=transfer.rdb_version,
        role=server.info.get("role", ""),
        keys=keys_per_db(after),
        keys_exact=keys_per_db(after) == before,
        master_repl_offset=int(server.info.get("master_repl_offset", 0)),
        form=transfer.form,
        sync_at=sync_at,
        snapshot_at=snapshot_at,
        rdb_size=transfer.size,
    )
