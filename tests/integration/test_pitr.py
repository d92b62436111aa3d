"""Point-in-time recovery on real clusters, checked against an oracle of commit timestamps.

A workload commits one small transaction at a time and records each commit's timestamp
(track_commit_timestamp) and xid; the expected state at a target is the oracle's operations committed
at or before it. Every restore starts PostgreSQL and compares the whole table with that state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from hadr_backup.errors import IntegrityError, TargetUnreachable
from hadr_backup.postgres import recovery, wal
from hadr_backup.postgres.archive import archive_command_for
from hadr_backup.postgres.archiveview import restorable_window
from hadr_backup.postgres.walchain import check_wal_chain
from hadr_backup.procs import free_port
from hadr_backup.repo.repository import open_repo
from hadr_backup.verify.findings import ERROR
from tests.integration.pg_support import BIN, PgEnv, restored_port

pytestmark = pytest.mark.integration
QUIET = {"autovacuum": "off"}  # no background commits: the oracle is every commit there is


@dataclass
class Op:
    at: datetime  # commit timestamp
    xid: int
    lsn: int  # insert position right after the commit
    sql: str
    apply: tuple  # ("put", id, note) | ("upd", id, note) (if the row exists) | ("del", id)


def commit(env: PgEnv, sql: str, apply: tuple, port: int | None = None) -> Op:
    """Run ``sql`` as one transaction; return its commit timestamp, xid and the LSN after it."""
    import psycopg

    with psycopg.connect(env.dsn(port=port), autocommit=True) as conn:
        with conn.transaction():
            xid = conn.execute("select txid_current()::bigint % 4294967296").fetchone()[0]
            conn.execute(sql)
        at, lsn = conn.execute(
            "select pg_xact_commit_timestamp(%s::text::xid), pg_current_wal_insert_lsn()::text", (str(xid),)
        ).fetchone()
    return Op(at, int(xid), wal.parse_lsn(lsn), sql, apply)


def expected(
    ops: list[Op], *, until: datetime | None = None, upto: int | None = None, exclusive: bool = False
) -> set[tuple]:
    state: dict[int, str] = {}
    for index, op in enumerate(ops):
        if until is not None and (op.at > until or exclusive and op.at >= until):
            continue
        if upto is not None and index > upto:
            continue
        if op.apply[0] == "put" or op.apply[0] == "upd" and op.apply[1] in state:
            state[op.apply[1]] = op.apply[2]
        else:
            state.pop(op.apply[1], None)
    return set(state.items())


def rows(env: PgEnv, to: Path) -> set[tuple]:
    return set(env.sql("select id, note from ledger", port=restored_port(to)))


def workload(env: PgEnv, first_id: int, count: int, *, label: str, port: int | None = None) -> list[Op]:
    """Inserts (mostly 20-40 ms apart, some back to back), updates and a delete, one per transaction."""
    ops = []
    for n in range(count):
        key = first_id + n
        if n % 7 == 5:
            ops.append(
                commit(
                    env,
                    f"update ledger set note = '{label}{key - 3}v2' where id = {key - 3}",
                    ("upd", key - 3, f"{label}{key - 3}v2"),
                    port,
                )
            )
        elif n % 11 == 9:
            ops.append(commit(env, f"delete from ledger where id = {key - 5}", ("del", key - 5), port))
        else:
            ops.append(
                commit(env, f"insert into ledger values ({key}, '{label}{key}')", ("put", key, f"{label}{key}"), port)
            )
        if n % 6 not in (2, 3):  # ops 2->3 and 3->4 of every six commit back to back
            time.sleep(0.03)
    return ops


def between(ops: list[Op], index: int) -> datetime:
    """An instant strictly between commit ``index`` and the next one."""
    gap = ops[index + 1].at - ops[index].at
    assert gap >= timedelta(microseconds=2), gap
    return ops[index].at + gap / 2


def text(moment: datetime) -> str:
    return moment.isoformat()


# -- one backup, one workload, many targets ---------------------------------------------------------


@pytest.fixture(scope="module")
def oracle():
    env = PgEnv(settings=QUIET)
    env.sql("create table ledger(id int primary key, note text)")
    backup = env.backup()
    ops = workload(env, 1, 40, label="a")
    env.sql("select pg_create_restore_point('oracle-mid')")
    ops += workload(env, 100, 12, label="b")
    env.switch_and_wait()
    yield env, backup, ops
    env.close()


def restore_and_read(env: PgEnv, **options) -> tuple[set[tuple], object]:
    to = env.new_restore_dir()
    result = env.restore(to, start=True, **options)
    try:
        return rows(env, to), result
    finally:
        env.stop_restored(to)


def close_pair(ops: list[Op]) -> int:
    pairs = [i for i in range(len(ops) - 1) if ops[i + 1].at - ops[i].at < timedelta(milliseconds=10)]
    assert pairs, "the workload made no commits less than 10 ms apart"
    return pairs[0]


@pytest.mark.parametrize(
    "case",
    [
        "between 3 and 4",
        "exactly at 10",
        "exactly at 10, exclusive",
        "between two commits < 10 ms apart",
        "between 30 and 31",
        "before the first",
    ],
)
def test_time_targets_match_the_oracle(oracle, case: str) -> None:
    env, backup, ops = oracle
    exclusive = "exclusive" in case
    if case == "between 3 and 4":
        target = between(ops, 3)
    elif case.startswith("exactly at 10"):
        target = ops[10].at
    elif case.startswith("between two commits"):
        index = close_pair(ops)
        assert ops[index + 1].at - ops[index].at < timedelta(milliseconds=10)
        target = between(ops, index)
    elif case == "between 30 and 31":
        target = between(ops, 30)
    else:
        target = ops[0].at - timedelta(microseconds=1)
        assert target.timestamp() >= backup.stop_time
    found, result = restore_and_read(env, time=text(target), exclusive=exclusive)
    assert found == expected(ops, until=target, exclusive=exclusive)
    assert result.state == "paused"
    assert (
        result.plan.stop_record is not None
        and result.plan.stop_record.time > target
        or exclusive
        and result.plan.stop_record.time >= target
    )


def test_xid_lsn_and_name_targets(oracle) -> None:
    env, _, ops = oracle
    found, _ = restore_and_read(env, xid=str(ops[17].xid))
    assert found == expected(ops, upto=17)
    found, _ = restore_and_read(env, lsn=wal.format_lsn(ops[25].lsn))
    assert found == expected(ops, upto=25)
    found, result = restore_and_read(env, name="oracle-mid")
    assert found == expected(ops, upto=39)
    assert result.stop_line and "oracle-mid" in result.stop_line


def test_latest_replays_everything_archived(oracle) -> None:
    env, _, ops = oracle
    found, result = restore_and_read(env, latest=True, action="promote")
    assert found == expected(ops)
    assert result.state == "promoted" and result.reached_timeline == 2


def test_shutdown_action_stops_the_server_at_the_target(oracle) -> None:
    env, _, ops = oracle
    to = env.new_restore_dir()
    result = env.restore(to, xid=str(ops[8].xid), start=True, action="shutdown")
    assert result.state == "shut down" and recovery.postmaster_pid(to) is None
    assert result.stop_line and f"transaction {ops[8].xid}" in result.stop_line
    assert result.reached_time == ops[8].at.timestamp()  # inclusive: that transaction is the last applied


def test_cli_takes_an_offset_and_prints_the_resolved_utc_instant(oracle) -> None:
    env, _, ops = oracle
    target = between(ops, 5)
    shifted = target.astimezone(timezone(timedelta(hours=5, minutes=30)))  # the same instant, written in +05:30
    to = env.new_restore_dir()
    done = env.hadr(
        "restore", "pg", "--target-time", shifted.strftime("%Y-%m-%d %H:%M:%S.%f+05:30"), "--to", str(to), "--start"
    )
    try:
        assert done.returncode == 0, done.stderr
        utc = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        assert f"target time resolves to {utc} (UTC)" in done.stderr
        assert rows(env, to) == expected(ops, until=target)
    finally:
        env.stop_restored(to)


@pytest.mark.parametrize(
    "when, why",
    [
        ("before", "before the end of the oldest"),
        ("after", "no transaction ended after"),
        ("future", "no transaction ended after"),
    ],
)
def test_unreachable_targets_exit_2_with_the_window(oracle, when: str, why: str) -> None:
    env, backup, ops = oracle
    target = {
        "before": datetime.fromtimestamp(backup.start_time - 60).astimezone(),
        "after": ops[-1].at + timedelta(milliseconds=1),
        "future": ops[-1].at + timedelta(days=1),
    }[when]
    to = env.new_restore_dir()
    done = env.hadr("restore", "pg", "--target-time", text(target), "--to", str(to))
    assert done.returncode == 2, done.stderr
    assert why in done.stderr and "restorable window of main" in done.stderr and "timeline 1:" in done.stderr
    assert not to.exists(), "nothing may be written before the target is proven reachable"


def test_window_and_chain_of_a_healthy_archive(oracle) -> None:
    env, backup, ops = oracle
    with open_repo(env.policy) as repo:
        assert not [f for f in check_wal_chain(repo, "main") if f.level == ERROR]
        windows = restorable_window(repo, "main")
    assert [w.timeline for w in windows] == [1]
    assert windows[0].start_time == backup.stop_time
    assert windows[0].end_time == ops[-1].at.timestamp()


# -- timelines ---------------------------------------------------------------------------------------


def test_timelines_restore_promote_write_restore_again() -> None:
    env = PgEnv(settings=QUIET)
    try:
        env.sql("create table ledger(id int primary key, note text)")
        env.backup()
        first = workload(env, 1, 6, label="a")
        fork_at = between(first, 2)
        env.switch_and_wait()
        # restore to the fork point, turn archiving on (as a cutover would), promote: timeline 2
        side = env.new_restore_dir()
        env.restore(side, time=text(fork_at), port=free_port())
        command = archive_command_for(env.policy_path, "main").replace("'", "''")
        with open(side / "postgresql.auto.conf", "a") as conf:
            conf.write(f"archive_mode = 'on'\narchive_command = '{command}'\n")
        port = restored_port(side)
        recovery.wait_for_recovery(side, env.dsn(port=port), recovery.start_server(side, BIN), 120)
        env.sql("select pg_wal_replay_resume()", port=port)
        _wait(lambda: not env.sql("select pg_is_in_recovery()", port=port)[0][0])
        env.wait_archived("00000002.history")
        # the old primary goes on writing on timeline 1; the promoted copy writes on timeline 2
        old_line = workload(env, 50, 4, label="c")
        env.switch_and_wait()
        second = workload(env, 10, 4, label="b", port=port)
        name = env.sql("select pg_walfile_name(pg_current_wal_insert_lsn())", port=port)[0][0]
        env.sql("select pg_switch_wal()", port=port)
        env.wait_archived(name)
        # a time on timeline 2: rows before the fork, then timeline 2's, never timeline 1's later ones
        target = between(second, 1)
        to = env.new_restore_dir()
        result = env.restore(to, time=text(target), start=True)
        assert result.plan.timeline == 2
        assert rows(env, to) == expected(first, until=fork_at) | expected(second, until=target)
        env.stop_restored(to)
        # the same archive still restores timeline 1's own history
        to = env.new_restore_dir()
        result = env.restore(to, time=text(between(old_line, 2)), timeline=1, start=True)
        assert rows(env, to) == expected(first + old_line, until=between(old_line, 2))
        env.stop_restored(to)
        with open_repo(env.policy) as repo:
            assert not [f for f in check_wal_chain(repo, "main") if f.level == ERROR]
            assert {w.timeline for w in restorable_window(repo, "main")} == {1, 2}
    finally:
        env.close()


# -- damaged archives ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmented():
    """A backup followed by commits spread over several segments, each segment closed by a switch."""
    env = PgEnv(settings=QUIET)
    env.sql("create table ledger(id int primary key, note text)")
    backup = env.backup()
    ops, segments = [], []
    for batch in range(5):
        ops += workload(env, batch * 10 + 1, 3, label="s")
        segments.append(env.switch_and_wait())
    yield env, backup, ops, segments
    env.close()


def _stored(env: PgEnv, name: str) -> Path:
    with open_repo(env.policy) as repo:
        return env.repo_dir / wal.list_archived(repo, "main").find(name).key


def test_missing_segment_is_refused_before_anything_is_written(segmented) -> None:
    env, _, ops, segments = segmented
    victim = _stored(env, segments[2])
    hidden = victim.with_name(victim.name + ".hidden")
    victim.rename(hidden)
    try:
        to = env.new_restore_dir()
        with pytest.raises(TargetUnreachable, match=f"WAL.*{segments[2]}"):
            env.restore(to, time=text(between(ops, 12)))
        done = env.hadr("restore", "pg", "--latest", "--to", str(to))
        assert done.returncode == 2 and f"WAL segment {segments[2]} is missing" in done.stderr
        assert not to.exists()
        with open_repo(env.policy) as repo:
            gaps = [f for f in check_wal_chain(repo, "main") if f.code == "wal-gap"]
        assert gaps and gaps[0].subject == segments[2]
        # before the gap everything still restores
        found, _ = restore_and_read(env, time=text(between(ops, 4)))
        assert found == expected(ops, until=between(ops, 4))
    finally:
        hidden.rename(victim)


def test_segment_lost_after_the_check_stops_recovery_loudly(segmented) -> None:
    env, _, ops, segments = segmented
    to = env.new_restore_dir()
    env.restore(to, time=text(between(ops, 12)), port=free_port())  # proven reachable, configured, not started
    victim = _stored(env, segments[1])
    hidden = victim.with_name(victim.name + ".hidden")
    victim.rename(hidden)
    (to / "pg_wal" / segments[1]).unlink()  # gone from the staged copy too
    try:
        log = recovery.start_server(to, BIN)
        with pytest.raises(recovery.RecoveryFailed, match="recovery ended before configured recovery target"):
            recovery.wait_for_recovery(to, env.dsn(port=restored_port(to)), log, 120)
        assert recovery.postmaster_pid(to) is None
    finally:
        hidden.rename(victim)


@pytest.mark.parametrize("staged", [True, False])
def test_corrupted_segment_is_never_replayed(segmented, staged: bool) -> None:
    """Staged: the copy into pg_wal fails its check before the server starts. Fetched by
    restore_command: wal-fetch fails, PostgreSQL stops recovery with a FATAL error, hadr says so."""
    env, _, ops, segments = segmented
    victim = _stored(env, segments[1])
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x55
    victim.write_bytes(bytes(damaged))
    try:
        to = env.new_restore_dir()
        expected_error = IntegrityError if staged else recovery.RecoveryFailed
        with pytest.raises(expected_error) as failed:
            env.restore(to, lsn=wal.format_lsn(ops[13].lsn), start=True, stage_wal=staged)
        message = str(failed.value)
        # staged: the copy's check names the object; fetched: wal-fetch's own line in PostgreSQL's log does
        assert segments[1] in message, message
        assert "is damaged" in message if staged else "could not fetch" in message, message
        assert recovery.postmaster_pid(to) is None
    finally:
        victim.write_bytes(original)


def _wait(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)
