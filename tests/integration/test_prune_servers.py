"""hadr prune on real servers: a PostgreSQL source with four base backups and the WAL between them (a prune
killed half way, `verify repo`, the prune finished, then the oldest kept backup restored to an instant in its
window and its rows queried); a Redis source with three snapshots (the oldest kept one restored key by key); a
Redis AOF archive across a rewrite (the files older than the base the kept snapshot needs removed, the archive
still restoring every write)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hadr_backup.postgres import wal
from hadr_backup.postgres.walretention import position
from hadr_backup.repo.prune import KILL_AT_ENV
from hadr_backup.repo.repository import open_repo
from tests.helpers import hadr_cli, write_policy
from tests.integration.pg_support import PgEnv, restored_port
from tests.schema_check import assert_schema

KEEP_TWO = {"hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "min_full": 2}


def prune(policy_file: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({KILL_AT_ENV: kill_at} if kill_at else {})}
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), "prune", "--json"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)


def with_retention(policy_file: Path, retention: dict) -> None:
    data = yaml.safe_load(policy_file.read_text())
    write_policy(policy_file, {**data, "retention": retention})


def verify_passes(policy_file: Path) -> None:
    done = hadr_cli(policy_file, "--json", "verify", "repo")
    assert done.returncode == 0 and assert_schema("verify-repo", done.stdout)["passed"], done.stdout


@pytest.fixture
def pg_env():
    env = PgEnv(settings={"autovacuum": "off"})
    yield env
    env.close()


def test_pg_prune_keeps_what_the_oldest_kept_backup_needs_and_it_restores(pg_env: PgEnv) -> None:
    env = pg_env
    env.sql("create table ledger(id int primary key, batch text)")
    backups, target = [], None
    for batch in ("a", "b", "c", "d"):
        first = len(backups) * 10 + 1
        env.sql(f"insert into ledger select g, '{batch}' from generate_series({first}, {first + 9}) g")
        env.switch_and_wait()
        backups.append(env.backup())
        if batch == "c":  # after the oldest backup that will be kept: a target in its window
            env.sql("insert into ledger values (100, 'in the window')")
            target = env.sql("select clock_timestamp()")[0][0]
            env.sql("insert into ledger values (101, 'after the target')")
            env.switch_and_wait()
    with_retention(env.policy_path, KEEP_TWO)
    oldest_kept = backups[2]
    # 1. killed after one WAL segment was removed: the expired backups read expiring, verify passes
    killed = prune(env.policy_path, kill_at="stream:1")
    assert killed.returncode == -9, killed.stderr
    verify_passes(env.policy_path)
    # 2. the next prune finishes: two backups expired, the WAL before the oldest kept backup's start gone
    done = prune(env.policy_path)
    assert done.returncode == 0, done.stderr
    result = assert_schema("prune", done.stdout)
    assert set(result["expired"]) == {backups[0].backup_id, backups[1].backup_id}
    kept = {b["id"]: b["reasons"] for b in result["backups"] if b["action"] == "keep"}
    assert kept == {backups[3].backup_id: ["min_full 2"], oldest_kept.backup_id: ["min_full 2"]}
    with open_repo(env.policy) as repo:
        archived = wal.list_archived(repo, "main")
        assert {b.id for b in repo.catalog.entries} == set(kept)
    names = [f.name for f in archived.all_segments()]
    assert min(names) == oldest_kept.start_wal, (names[:3], oldest_kept.start_wal)
    assert all(position(n) >= position(oldest_kept.start_wal) for n in names)
    verify_passes(env.policy_path)
    # 3. the oldest kept backup restores to an instant in its window: every row up to it, none after
    to = env.new_restore_dir()
    restored = env.restore(to, time=target.isoformat(), start=True)
    assert restored.plan.backup.id == oldest_kept.backup_id
    try:
        rows = env.sql("select id, batch from ledger order by id", port=restored_port(to))
    finally:
        env.stop_restored(to)
    expected = [(i, batch) for n, batch in enumerate("abc") for i in range(n * 10 + 1, n * 10 + 11)]
    assert rows == [*expected, (100, "in the window")]


def test_redis_prune_keeps_the_newest_snapshots_and_the_oldest_kept_restores(redis_factory, tmp_path: Path) -> None:
    server = redis_factory()
    data = {
        "repository": {"path": str(tmp_path / "repo")},
        "sources": {"redis": [{"name": "queue", "url": server.url}]},
        "retention": KEEP_TWO,
    }
    policy_file = write_policy(tmp_path / "policy.yaml", data)
    hadr_cli(policy_file, "init", check=True)
    ids = []
    for n in range(3):
        server.client().set(f"key{n}", f"value {n}")
        ids.append(
            assert_schema("backup-redis", hadr_cli(policy_file, "--json", "backup", "redis", check=True).stdout)[
                "backup_id"
            ]
        )
    dry = assert_schema(
        "prune", hadr_cli(policy_file, "--json", "prune", "--dry-run", "--source", "queue", check=True).stdout
    )
    assert dry["expired"] == [ids[0]] and dry["removed_objects"] == 2  # the RDB and backup.json
    result = assert_schema("prune", hadr_cli(policy_file, "--json", "prune", check=True).stdout)
    assert result["expired"] == [ids[0]] and result["removed_objects"] == 2
    assert not list((tmp_path / "repo" / "backups" / "redis" / "queue" / ids[0]).rglob("*.*"))
    verify_passes(policy_file)
    out = tmp_path / "out"
    hadr_cli(policy_file, "restore", "redis", "--backup", ids[1], "--to", str(out), check=True)
    from tests.integration.test_redis_snapshots import restored_contents

    restored = {key: value for (_db, key), (_kind, value) in restored_contents(out).items()}
    assert restored == {b"key0": b"value 0", b"key1": b"value 1"}


def test_redis_prune_removes_the_aof_files_older_than_the_base_the_kept_snapshot_needs(redis_factory, tmp_path):
    from tests.integration.test_redis_aof_archive import SOURCE, aof_dir, archivable, archive, rewrite, write
    from tests.integration.test_redis_aof_archive import policy as aof_policy

    server = archivable(redis_factory)
    policy_file = aof_policy(tmp_path, server)
    with_retention(policy_file, {**KEEP_TWO, "min_full": 1})
    # 1. generation 1 (the base Redis wrote at start, an incr), archived; then a rewrite a second later
    write(server, "first", 50)
    archive(policy_file)
    time.sleep(1.1)  # the new base's second is after every command of the old incr file
    rewrite(server)
    write(server, "second", 50)
    archive(policy_file)  # the old base and incr archived whole as history, the new ones
    old = {"appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof"}
    manifest = (aof_dir(server) / "appendonly.aof.manifest").read_text()
    assert all(f"file {name} " in manifest and "type h" in manifest for name in old), manifest
    # 2. a snapshot (the kept instant, after the new base), more writes archived
    time.sleep(1.1)
    hadr_cli(policy_file, "backup", "redis", check=True)
    write(server, "third", 50)
    archive(policy_file)
    repo_aof = tmp_path / "repo" / "aof" / SOURCE
    old_pieces = [p for name in old for p in (repo_aof / name).glob("*") if p.is_file()]
    assert old_pieces
    # 3. a prune killed after its first piece removal leaves a repository that verifies
    killed = prune(policy_file, kill_at="stream:1")
    assert killed.returncode == -9, killed.stderr
    assert sum(p.exists() for p in old_pieces) == len(old_pieces) - 1
    verify_passes(policy_file)
    # 4. the next prune finishes: generation 1's pieces go, the chain restore reads stays whole
    result = assert_schema("prune", hadr_cli(policy_file, "--json", "prune", check=True).stdout)
    assert result["expired"] == []
    assert result["stream"] == [
        {
            "kind": "redis",
            "source": SOURCE,
            "removed_objects": len(old_pieces) - 1,
            "freed_bytes": result["freed_bytes"],
        }
    ]
    assert not any(p.exists() for p in old_pieces)
    assert (repo_aof / "archive.json").is_file()
    verify_passes(policy_file)
    out = tmp_path / "out"
    done = hadr_cli(policy_file, "--json", "restore", "redis", "--latest", "--to", str(out), check=True)
    restored = assert_schema("restore-redis", done.stdout)
    assert restored["keys"] == {"db0": 150}  # first, second and third: loaded by a scratch redis-server
