"""The Redis part of ``hadr demo``: the queues instance snapshotted, its AOF archived while the workload
runs, restored to a second T into a scratch directory, started, and its BullMQ queues checked (the jobs
a restore leaves active requeued).

The proof is exact: the workload pauses across a second boundary at T, the queues' id counters and jobs
per state are read then, and the restored instance must hold exactly those.
"""

from __future__ import annotations

import math
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.procs import free_port
from hadr_backup.redis import queues
from hadr_backup.redis.aofarchive import run_archive_redis
from hadr_backup.redis.aofrestore import AOF_DIR_NAME
from hadr_backup.redis.backup import run_backup_redis
from hadr_backup.redis.restore import RedisRestoreOptions, run_restore_redis
from hadr_backup.redis.wire import Address, Connection
from hadr_backup.sandbox.layout import Progress, Sandbox
from hadr_backup.sandbox.servers import RedisServer
from hadr_backup.sandbox.workload import QUEUES, Bundler, run_workload
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.ui import plural

ARCHIVE_EVERY = 0.5  # seconds between archive passes while the workload runs


@dataclass
class RedisDemo:
    source: str
    snapshot_id: str
    archived_bytes: int  # by the passes during the story
    target: int  # the second restored to
    reached: float
    expected: dict[str, dict[str, Any]]  # per queue at T: id counter and jobs per state
    restored: dict[str, dict[str, Any]]  # the same, read from the restored instance
    restore_warnings: list[str] = field(default_factory=list)  # the queue checks on the scratch server
    requeued: int = 0
    queue_findings: list[dict[str, Any]] = field(default_factory=list)  # of the check after the requeue
    queue_check_passed: bool = False

    @property
    def passed(self) -> bool:
        return self.expected == self.restored and self.queue_check_passed

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "snapshot_id": self.snapshot_id,
            "archived_bytes": self.archived_bytes,
            "target": rfc3339(self.target),
            "reached": rfc3339(self.reached),
            "queues_as_at_target": self.expected == self.restored,
            "jobs_at_target": sum(sum(q["jobs"].values()) for q in self.expected.values()),
            "restore_warnings": self.restore_warnings,
            "requeued": self.requeued,
            "queue_findings": self.queue_findings,
            "passed": self.passed,
        }

    def rows(self) -> list[tuple[str, str]]:
        jobs = sum(sum(q["jobs"].values()) for q in self.expected.values())
        same = "exactly as at T" if self.expected == self.restored else "NOT as at T"
        return [
            ("redis snapshot", f"{self.snapshot_id} of {self.source}"),
            ("redis AOF", f"{self.archived_bytes} bytes archived while the workload ran"),
            ("redis PITR", f"to {format_time(self.target)}: {len(self.expected)} queues, {jobs} jobs, {same}"),
            (
                "queue checks",
                f"{plural(len(self.restore_warnings), 'warning')} on the scratch server; "
                f"{plural(self.requeued, 'job')} left active requeued; then "
                + ("passed" if self.queue_check_passed else "FAILED"),
            ),
        ]


def redis_story(sandbox: Sandbox, seconds: float, say: Progress) -> RedisDemo:
    """Snapshot, archive while the workload runs, restore the queues to T, start them, check them."""
    policy = sandbox.policy
    source = sandbox.queue_source
    # 1. a snapshot, and the AOF archived from its current base
    say(f"redis 1/4 snapshot of {source.name}, and its AOF archived while the workload runs")
    snapshot = run_backup_redis(policy, source.name)
    archived = run_archive_redis(policy, source.name).bytes_archived
    # 2. workload; a pause across a second boundary is T; more workload (archived all along)
    say(f"redis 2/4 workload for {seconds:g} s, paused across the end of the second T, archived all along")
    with _Archiving(policy, source.name) as passes:
        target, expected = _workload_around_a_second(sandbox, source, seconds)
    archived += passes.bytes + run_archive_redis(policy, source.name).bytes_archived
    # 3. restore the queues to T, into a scratch directory (the queue checks run on the scratch server)
    say(f"redis 3/4 restoring {source.name} to {format_time(target)} from the AOF archive")
    directory = sandbox.root / "demo-redis-restore"
    options = RedisRestoreOptions(to=directory, source=source.name, target_time=rfc3339(target), force=True)
    restore = run_restore_redis(policy, options)
    # 4. start it, compare with T, requeue what was left active, check again
    say("redis 4/4 starting the restored queues: as at T? then the queue checks, active jobs requeued")
    try:
        restored, requeued, report = _start_and_check(directory, restore.aof_name)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return RedisDemo(
        source=source.name,
        snapshot_id=snapshot.backup_id,
        archived_bytes=archived,
        target=target,
        reached=restore.reached,
        expected=expected,
        restored=restored,
        restore_warnings=restore.warnings,
        requeued=requeued,
        queue_findings=report.to_json()["findings"],
        queue_check_passed=report.passed,
    )


class _Archiving:
    """Archive passes in a thread until the block ends (what `hadr archive redis --follow` does)."""

    def __init__(self, policy, source_name: str):
        self.policy, self.source_name = policy, source_name
        self.bytes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        while not self.stop.wait(ARCHIVE_EVERY):
            try:
                self.bytes += run_archive_redis(self.policy, self.source_name).bytes_archived
            except BaseException as error:  # raised in the demo's thread when the block ends
                self.error = error
                return

    def __enter__(self) -> _Archiving:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def _workload_around_a_second(sandbox: Sandbox, source, seconds: float) -> tuple[int, dict]:
    stack = sandbox.open_stack()
    try:
        bundler = Bundler(stack, random.Random())
        run_workload(bundler, seconds=seconds / 2, rate=20)
        for queue in QUEUES:  # workers have jobs in hand when disaster strikes
            bundler.add_job(queue, {"demo": "in hand at T"})
            bundler.start_job(queue)
        # every write so far is in a second <= target; every later one in a later second (the margin
        # covers Redis's cached clock, which its #TS annotations use)
        target = math.floor(time.time())
        with Connection(Address.of_source(source)) as conn:
            expected = _queue_state(conn)
        time.sleep(max(0.0, target + 1.3 - time.time()))
        run_workload(bundler, seconds=seconds / 2, rate=20)
    finally:
        stack.close()
    return target, expected


def _queue_state(conn: Connection) -> dict[str, dict[str, Any]]:
    counts = queues.queue_counts(conn)
    return {name: {"id": conn.call("GET", f"{queues.PREFIX}:{name}:id"), "jobs": jobs} for name, jobs in counts.items()}


def _start_and_check(directory: Path, aof_name: str | None):
    extra = {"appenddirname": AOF_DIR_NAME, "appendfilename": aof_name}
    server = RedisServer(directory, free_port(), appendonly=True, extra=extra)
    server.start(timeout=60)
    try:
        with Connection(Address("127.0.0.1", server.port, None, None, False)) as conn:
            restored = _queue_state(conn)
            requeued = queues.check_queues(conn, requeue_active=True).requeued
            report = queues.check_queues(conn).report
    finally:
        server.stop()
    return restored, requeued, report
