"""``hadr demo``: the recovery story on the sandbox, narrated, with RTO and RPO measured.

sandbox up → base backup → bundler workload → an accidental UPDATE at a recorded instant → more
workload → WAL archived → PITR to the last good instant into a side cluster → the damaged rows are
back and the later rows absent → RTO, RPO → production repaired from the restored copy → side
cluster torn down → the Redis queues snapshotted, their AOF archived under the workload, restored to a
second and checked (demoredis.py) → a bucket restored to an instant
into a new bucket and verified (demobucket.py)
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from hadr_backup.errors import ServerError
from hadr_backup.sandbox.demobucket import bucket_line, bucket_story
from hadr_backup.sandbox.demoredis import RedisDemo, redis_story
from hadr_backup.sandbox.layout import Sandbox, sandbox_policy
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.ui import plural

ACCIDENT = 'UPDATE "user" SET winston_credit_balance = 0'
Progress = Callable[[str], None]


@dataclass
class DemoResult:
    sandbox: str
    backup_id: str
    accident: str
    accident_at: float  # when the accidental statement committed (server clock)
    target: float  # the last good instant, the restore's --target-time
    damaged_rows: int  # users whose balance the accident zeroed
    recovered_rows: int  # of those, back with their balance from before the accident
    later_rows: int  # audit_log rows committed in production after the accident
    later_rows_absent: int  # of those, absent from the restored copy
    lost_rows: int  # audit_log rows committed before the accident but missing from the restored copy
    rto: float  # seconds from the start of the restore until the copy answered at the target
    rpo: float  # seconds between the last transaction in the copy and the accident
    restore: dict[str, Any] = field(default_factory=dict)
    repaired: int = 0  # production balances set back from the restored copy
    ledger_problems: int | None = None  # ledger invariant problems in production after the repair
    kept: str | None = None  # the side cluster's directory when --keep
    redis: RedisDemo | None = None  # the queues: snapshot, AOF archive, restore to T, queue checks
    sandbox_stopped: bool = False  # --stop-sandbox: the sandbox was stopped at the end (its data stays)
    bucket: dict[str, Any] | None = None  # the bucket restored to an instant (demobucket.py)

    @property
    def exit_code(self) -> int:
        good = (
            self.recovered_rows == self.damaged_rows
            and self.later_rows_absent == self.later_rows
            and self.lost_rows == 0
            and self.ledger_problems == 0
            and (self.redis is None or self.redis.passed)
            and bool(self.bucket and self.bucket["passed"])
        )
        return 0 if good else 3

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "accident_at": rfc3339(self.accident_at),
            "target": rfc3339(self.target),
            "redis": self.redis.to_json() if self.redis else None,
            "passed": self.exit_code == 0,
        }

    def render(self, out) -> None:
        out.line("")
        out.kv(
            [
                ("accident", f"{self.accident}  (committed {format_time(self.accident_at)})"),
                ("restored to", f"{format_time(self.target)} (the last good instant) from backup {self.backup_id}"),
                (
                    "damaged rows back",
                    f"{self.recovered_rows} of {plural(self.damaged_rows, 'balance')} as before the accident",
                ),
                ("later rows absent", f"{self.later_rows_absent} of {self.later_rows} audit_log rows written after it"),
                ("rows lost", f"{self.lost_rows} audit_log rows from before the accident missing"),
                ("RTO", f"{self.rto:.2f} s (restore started -> copy answering at the target)"),
                ("RPO", f"{self.rpo * 1000:.1f} ms (last transaction in the copy -> the accident)"),
                (
                    "production",
                    f"{plural(self.repaired, 'balance')} repaired from the copy; ledger check: "
                    f"{'ok' if self.ledger_problems == 0 else plural(self.ledger_problems, 'problem')}",
                ),
                ("side cluster", f"kept in {self.kept}" if self.kept else "stopped and removed"),
                *(self.redis.rows() if self.redis else []),
            ]
        )
        if self.bucket:
            out.kv([("bucket", bucket_line(self.bucket))])
        out.line("demo: " + ("PASSED" if self.exit_code == 0 else "FAILED"))
        if self.sandbox_stopped:
            out.line(
                f"the sandbox in {self.sandbox} is stopped (its data stays): start it again with `hadr sandbox up "
                f"--dir {self.sandbox}`, or remove it with `hadr sandbox down --dir {self.sandbox} --purge`"
            )
            return
        out.line(
            f"the sandbox is still running in {self.sandbox}: use it by hand after "
            f"`export HADR_POLICY={self.sandbox}/policy.yaml`; stop it with `hadr sandbox down --dir "
            f"{self.sandbox}` (add --purge to remove its folder)"
        )


def run_demo(
    policy_path: str | None,
    sandbox_dir: Path | None,
    *,
    seconds: float = 6.0,
    keep: bool = False,
    stop_sandbox: bool = False,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the whole story; the sandbox is started when it is not running. ``policy_path``: --policy or
    HADR_POLICY, else the sandbox folder's own policy (see ``sandbox_policy``)."""
    from hadr_backup.postgres.basebackup import run_backup_pg

    say = progress or (lambda message: None)
    policy, folder = sandbox_policy(policy_path, sandbox_dir, write=True)
    sandbox = Sandbox(folder, policy, say)
    # 1. the sandbox, running and seeded, with a repository
    ensure_up(sandbox, say)
    # 2. a base backup
    say("1/6 base backup of PostgreSQL into the repository")
    backup = run_backup_pg(policy, None)
    say(f"    {backup.backup_id}: {backup.raw_size / 2**20:.0f} MiB in {backup.seconds:.1f} s")
    # 3. workload, the accident, more workload; the WAL archived
    story = live_story(sandbox, seconds, say)
    # 4. point-in-time restore into a side cluster, just before the accident
    say("4/6 point-in-time restore to the last good instant, into a side cluster")
    restored = restore_side(policy, folder / "demo-restore", story["target"])
    try:
        # 5. what came back, what did not, and production repaired from the copy
        say("5/6 comparing the restored copy with production")
        result = compare(sandbox, restored, story, backup.backup_id)
        say("6/6 repairing production balances from the restored copy")
        repair(sandbox, restored, story, result)
    finally:
        if keep:
            say(f"    side cluster kept running in {restored.directory} (port {restored.port})")
        else:
            tear_down(Path(restored.directory), policy.sources.postgres_named(None).bin_dir)
    result.kept = restored.directory if keep else None
    # 7. the Redis queues: snapshot, AOF archived under the workload, restored to a second, checked
    result.redis = redis_story(sandbox, seconds, say)
    # 8. a bucket restored to an instant into a new bucket, verified
    result.bucket = bucket_story(sandbox, say)
    if stop_sandbox:  # so that another sandbox (the README's by-hand steps) can take the ports
        from hadr_backup.sandbox.run import run_sandbox_down

        run_sandbox_down(policy, folder, progress=lambda message: say("    " + message))
        result.sandbox_stopped = True
    return result


def ensure_up(sandbox: Sandbox, say: Progress) -> None:
    from hadr_backup.repo.repository import init_repo
    from hadr_backup.sandbox.run import run_sandbox_up

    if len(sandbox.running_pids()) < len(sandbox.ports()) or not sandbox.read_marker().get("seeded"):
        if sandbox.running_pids():
            raise ServerError(
                f"the sandbox in {sandbox.root} is partly running",
                hint=f"run `hadr sandbox down --dir {sandbox.root}` first",
            )
        say(f"starting the sandbox in {sandbox.root}")
        run_sandbox_up(sandbox.policy, sandbox.root, progress=lambda message: say("    " + message))
    init_repo(sandbox.policy)


def live_story(sandbox: Sandbox, seconds: float, say: Progress) -> dict[str, Any]:
    """Workload, the accident at a recorded instant, more workload; returns what the checks need."""
    from hadr_backup.sandbox.workload import Bundler, run_workload

    stack = sandbox.open_stack()
    try:
        bundler = Bundler(stack, random.Random())
        say(f"2/6 bundler workload for {seconds:g} s (payments, uploads, reservations)")
        run_workload(bundler, seconds=seconds, rate=20)
        payment = stack.payment
        before = dict(payment.execute('SELECT user_address, winston_credit_balance FROM "user"').fetchall())
        last_audit, audit_count = payment.execute("SELECT max(audit_id), count(*) FROM audit_log").fetchone()
        target = server_now(payment)
        payment.execute(ACCIDENT)
        accident_at = server_now(payment)
        say(
            f"3/6 the accident: {ACCIDENT} (zeroed {sum(1 for v in before.values() if v)} balances); "
            f"the workload goes on"
        )
        run_workload(bundler, seconds=max(seconds / 3, 1.0), rate=20)
        switch_and_wait(sandbox)
    finally:
        stack.close()
    return {
        "before": before,
        "last_audit": last_audit,
        "audit_count": audit_count,
        "target": target,
        "accident_at": accident_at,
    }


def server_now(conn: Any) -> float:
    return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])


def switch_and_wait(sandbox: Sandbox, timeout: float = 60) -> None:
    """Close the current WAL segment and wait until it is in the repository (the sandbox's
    archive_timeout would otherwise take up to a minute)."""
    from hadr_backup.postgres import wal
    from hadr_backup.repo.repository import open_repo

    source = sandbox.pg_source
    with sandbox.postgres()[1].connect() as admin:
        name = admin.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()[0]
        admin.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + timeout
    while True:
        with open_repo(sandbox.policy, catalog=False) as repo:
            if wal.list_archived_for(repo, source.name, [name]).find(name) is not None:
                return
        if time.monotonic() > deadline:
            raise ServerError(
                f"WAL segment {name} was not archived within {timeout:g} s",
                hint="check the sandbox PostgreSQL log and its archive_command",
            )
        time.sleep(0.1)


def restore_side(policy: Any, directory: Path, target: float):
    from datetime import datetime

    from hadr_backup.postgres.restore import RestoreOptions, run_restore_pg
    from hadr_backup.postgres.targets import TIME, RecoveryTarget

    when = datetime.fromtimestamp(target, UTC)
    options = RestoreOptions(to=directory, target=RecoveryTarget(TIME, when), start=True, force=True, discard=True)
    return run_restore_pg(policy, options)


def _connect(source: Any, dbname: str, port: int | None = None):
    import psycopg

    conninfo = {**source.conninfo, "dbname": dbname}
    if port:
        conninfo.update(host="127.0.0.1", port=str(port))
    return psycopg.connect(" ".join(f"{k}={v}" for k, v in conninfo.items()), autocommit=True, connect_timeout=10)


def compare(sandbox: Sandbox, restored, story: dict[str, Any], backup_id: str) -> DemoResult:
    from hadr_backup.sandbox.seed import PAYMENT_DB

    source = sandbox.pg_source
    with _connect(source, PAYMENT_DB, restored.port) as copy, _connect(source, PAYMENT_DB) as production:
        back = dict(copy.execute('SELECT user_address, winston_credit_balance FROM "user"').fetchall())
        copied_before = copy.execute(
            "SELECT count(*) FROM audit_log WHERE audit_id <= %s", (story["last_audit"],)
        ).fetchone()[0]
        copied_later = copy.execute(
            "SELECT count(*) FROM audit_log WHERE audit_id > %s", (story["last_audit"],)
        ).fetchone()[0]
        later = production.execute(
            "SELECT count(*) FROM audit_log WHERE audit_id > %s", (story["last_audit"],)
        ).fetchone()[0]
    damaged = {user: balance for user, balance in story["before"].items() if balance}
    return DemoResult(
        sandbox=str(sandbox.root),
        backup_id=backup_id,
        accident=ACCIDENT,
        accident_at=story["accident_at"],
        target=story["target"],
        damaged_rows=len(damaged),
        recovered_rows=sum(1 for user, balance in damaged.items() if back.get(user) == balance),
        later_rows=later,
        later_rows_absent=later - copied_later,
        lost_rows=story["audit_count"] - copied_before,
        rto=restored.seconds,
        rpo=story["accident_at"] - (restored.reached_time or story["target"]),
        restore=restored.to_json(),
    )


def repair(sandbox: Sandbox, restored, story: dict[str, Any], result: DemoResult) -> None:
    """Production balance := the copy's balance + what production credited and debited since."""
    from hadr_backup.sandbox.seed import PAYMENT_DB, check_ledger

    source = sandbox.pg_source
    with _connect(source, PAYMENT_DB, restored.port) as copy, _connect(source, PAYMENT_DB) as production:
        back = copy.execute('SELECT user_address, winston_credit_balance FROM "user"').fetchall()
        with production.transaction():
            for user, balance in back:
                changed = production.execute(
                    'UPDATE "user" SET winston_credit_balance = %s + (SELECT coalesce(sum(winston_credit_amount), 0) '
                    "FROM audit_log WHERE user_address = %s AND audit_id > %s) WHERE user_address = %s "
                    "AND winston_credit_balance IS DISTINCT FROM %s + (SELECT coalesce(sum(winston_credit_amount), 0) "
                    "FROM audit_log WHERE user_address = %s AND audit_id > %s)",
                    (balance, user, story["last_audit"], user, balance, user, story["last_audit"]),
                )
                result.repaired += changed.rowcount
        result.ledger_problems = len(check_ledger(production))


def tear_down(directory: Path, bin_dir: str) -> None:
    from hadr_backup.procs import run_as_owner

    if (directory / "postmaster.pid").exists():
        run_as_owner([f"{bin_dir}/pg_ctl", "-D", str(directory), "-m", "fast", "-w", "stop"], check=False)
    shutil.rmtree(directory, ignore_errors=True)
