"""Base backups and restores of a real PostgreSQL cluster through an encrypted repository."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hadr_backup.errors import UsageError, WrongKey
from hadr_backup.postgres import wal
from hadr_backup.postgres.basebackup import BackupFailed
from hadr_backup.repo.repository import open_repo
from tests.integration.pg_support import PgEnv, new_key_file, restored_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env():
    env = PgEnv(encrypted=True)
    env.sql("create table item(id int primary key, payload text)")
    env.sql("insert into item select g, md5(g::text) from generate_series(1, 5000) g")
    yield env
    env.close()


@pytest.fixture(scope="module")
def first_backup(env: PgEnv):
    return env.backup()


def test_backup_records_what_restore_needs(env: PgEnv, first_backup) -> None:
    assert first_backup.state == "complete"
    with open_repo(env.policy) as repo:
        entry = repo.catalog.get(first_backup.backup_id)
    meta = entry.meta
    system_id = env.sql("select system_identifier::text from pg_control_system()")[0][0]
    assert meta["system_identifier"] == system_id
    assert meta["timeline"] == 1 and meta["pg_version_num"] >= 150000
    assert meta["wal_segment_size"] == 16 << 20
    assert wal.parse_lsn(meta["start_lsn"]) < wal.parse_lsn(meta["stop_lsn"])
    assert meta["start_wal"] <= meta["stop_wal"]
    assert "postgres" in meta["databases"] and meta["data_checksums"] is True
    assert meta["label"].startswith("START WAL LOCATION")
    assert {o.key for o in entry.objects} == {meta["tar_objects"][0], meta["manifest_object"]}
    assert meta["stop_time"] >= meta["start_time"]
    # source-neutral: the instant it is consistent at, and the WAL objects it cannot do without
    assert entry.consistent_at == meta["stop_time"] and entry.parent is None
    segments = sorted(wal.parse_wal_key(key)[1] for key in entry.needs)
    assert segments[0] == meta["start_wal"] and segments[-1] == meta["stop_wal"]
    assert all(key.startswith("wal/main/") for key in entry.needs)
    # the WAL from start to stop is in the repository, and verification agrees
    verified = env.hadr("verify", "repo", "--deep")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_restore_of_a_backup_alone_is_that_backup(env: PgEnv, first_backup) -> None:
    to = env.new_restore_dir()
    result = env.restore(to, backup_id=first_backup.backup_id, start=True, verify=True)
    assert result.state == "paused"
    assert oct(to.stat().st_mode & 0o777) == oct(0o700)
    assert to.stat().st_uid == __import__("pwd").getpwnam("postgres").pw_uid
    auto = (to / "postgresql.auto.conf").read_text()
    assert "recovery_target = 'immediate'" in auto and "archive_mode = 'off'" in auto
    assert "wal-fetch" in auto and (to / "recovery.signal").exists()
    assert env.sql("select count(*), max(payload) from item", port=restored_port(to)) == [
        (5000, env.sql("select max(payload) from item")[0][0])
    ]
    env.stop_restored(to)


def test_cli_restore_refuses_a_non_empty_directory_and_a_running_cluster(env: PgEnv, first_backup) -> None:
    to = env.new_restore_dir()
    to.mkdir()
    (to / "something").write_text("keep me")
    done = env.hadr("restore", "pg", "--backup", first_backup.backup_id, "--to", str(to))
    assert done.returncode == 2 and "is not empty" in done.stderr
    assert (to / "something").read_text() == "keep me"
    done = env.hadr("restore", "pg", "--backup", first_backup.backup_id, "--to", str(to), "--force", "--start")
    assert done.returncode == 0, done.stderr
    assert not (to / "something").exists()
    done = env.hadr("restore", "pg", "--backup", first_backup.backup_id, "--to", str(to), "--force")
    assert done.returncode == 2 and "running PostgreSQL server" in done.stderr
    env.stop_restored(to)


def test_wrong_key_is_refused_before_anything_is_written(env: PgEnv, first_backup, tmp_path: Path) -> None:
    wrong = new_key_file(env.base / "wrong.key")
    good_policy = env.policy_path.read_text()
    env.policy_path.write_text(good_policy.replace(str(env.key_file), str(wrong)))
    try:
        to = env.new_restore_dir()
        with pytest.raises(WrongKey):
            env.restore(to, backup_id=first_backup.backup_id)
        assert not to.exists()
        done = env.hadr("restore", "pg", "--backup", first_backup.backup_id, "--to", str(to))
        assert done.returncode == 2 and "key" in done.stderr.lower()
    finally:
        env.policy_path.write_text(good_policy)


def test_extra_tablespaces_are_refused_not_dropped(env: PgEnv) -> None:
    location = env.base / "tablespace"
    location.mkdir()
    os.chown(location, *_postgres_ids())
    env.sql(f"create tablespace extra location '{location}'")
    try:
        with pytest.raises(UsageError, match="tablespaces outside the data directory: extra"):
            env.backup()
    finally:
        env.sql("drop tablespace extra")


def test_backup_fails_naming_the_segment_when_archiving_is_broken(env: PgEnv) -> None:
    env.write_policy(backup_timeout=4)
    env.sql("alter system set archive_command = 'false'")
    env.sql("select pg_reload_conf()")
    try:
        with pytest.raises(BackupFailed) as failed:
            env.backup()
        assert "not archived" in str(failed.value) and "0000000" in str(failed.value)
        with open_repo(env.policy) as repo:
            newest = repo.catalog.select(kind="pg")[-1]
        assert newest.state == "failed"
    finally:
        env.sql("alter system reset archive_command")
        env.sql("select pg_reload_conf()")
        env.write_policy()
    assert env.backup().state == "complete"  # archiving catches up; the next backup works


def test_kill_9_midway_leaves_nothing_complete_and_the_next_backup_works(env: PgEnv) -> None:
    env.sql("create table bulk as select g, repeat(md5(g::text), 8) as filler from generate_series(1, 600000) g")
    with open_repo(env.policy) as repo:
        before = {e.id for e in repo.catalog.entries}
    process = subprocess.Popen(
        [sys.executable, "-m", "hadr_backup", "--policy", str(env.policy_path), "backup", "pg"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = _kill_when_running(env, process, before)
    with open_repo(env.policy) as repo:  # read-only: sees the entry as the dead process left it
        entry = repo.catalog.get(killed)
    assert entry.state == "running"
    assert env.backup().state == "complete"
    with open_repo(env.policy) as repo:
        assert repo.catalog.get(killed).state == "failed"
        assert not any(e.complete for e in repo.catalog.entries if e.id == killed)
    env.sql("drop table bulk")


def test_page_checksum_failures_are_reported(env: PgEnv) -> None:
    env.sql("create table fragile(id int, filler text)")
    env.sql("insert into fragile select g, repeat('x', 500) from generate_series(1, 2000) g")
    env.sql("checkpoint")
    path = env.cluster.data_dir / env.sql("select pg_relation_filepath('fragile')")[0][0]
    env.cluster.stop()
    with open(path, "r+b") as relation:  # damage a tuple of block 1, not its header
        relation.seek(8192 + 4000)
        relation.write(b"\xde\xad\xbe\xef")
    env.cluster.start()
    try:
        result = env.backup()
        assert result.checksum_failures, result
        assert any("fragile" in f or os.path.basename(path) in f for f in result.checksum_failures)
    finally:
        env.sql("drop table fragile")


def test_backup_and_point_in_time_restore_through_s3(s3_server) -> None:
    import uuid

    bucket = f"pg-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    env = PgEnv(encrypted=True, s3=(s3_server.endpoint_url, bucket))
    try:
        env.sql("create table item(id int primary key, at timestamptz default clock_timestamp())")
        backup = env.backup()
        env.sql("insert into item(id) select generate_series(1, 10)")
        target = env.sql("select clock_timestamp()")[0][0]
        env.sql("insert into item(id) select generate_series(11, 20)")
        env.switch_and_wait()
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix="pg/backups/")["Contents"]]
        assert any(backup.backup_id in key for key in keys)
        to = env.new_restore_dir()
        result = env.restore(to, time=target.isoformat(), start=True)
        assert result.plan.backup.id == backup.backup_id
        assert env.sql("select count(*), max(id) from item", port=restored_port(to)) == [(10, 10)]
    finally:
        env.close()


def _kill_when_running(env: PgEnv, process: subprocess.Popen, before: set[str]) -> str:
    """SIGKILL the backup once its entry is in the catalog and data is flowing; return the entry id."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open_repo(env.policy) as repo:
            new = [e for e in repo.catalog.entries if e.id not in before]
            stored = list(repo.store.list(f"backups/pg/main/{new[0].id}/")) if new else []
        if new:
            time.sleep(0.3)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return new[0].id
        time.sleep(0.05)
        del stored
    process.kill()
    raise AssertionError("the backup never showed up in the catalog")


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid
