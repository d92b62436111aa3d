"""Redis snapshots over the replication protocol, on real redis-server processes: both transfer forms
restored key by key, an ACL user with only the README's permissions, a wrong password, a target before the
first snapshot, a corrupted stored RDB, and a 100 MB value streamed with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hadr_backup.procs import free_port
from hadr_backup.sandbox.servers import RedisServer
from tests.helpers import hadr_cli, write_policy
from tests.schema_check import assert_schema

ACL = "+sync +replconf +info +time +ping +config|get"  # what the README names


def policy(tmp_path: Path, url: str) -> Path:
    data = {"repository": {"path": str(tmp_path / "repo")}, "sources": {"redis": [{"name": "queue", "url": url}]}}
    path = write_policy(tmp_path / "policy.yaml", data)
    hadr_cli(path, "init", check=True)
    return path


def fill(server: RedisServer) -> None:
    """Strings, hashes, lists and a set across three dbs."""
    for db in (0, 1, 3):
        client = server.client(db=db)
        for i in range(50):
            client.set(f"s:{db}:{i}", f"value {i}" * (i + 1))
        client.hset(f"h:{db}", mapping={f"f{i}": str(i * db) for i in range(20)})
        client.rpush(f"l:{db}", *[f"item{i}" for i in range(30)])
        client.sadd(f"set:{db}", "a", "b", "c")


READERS = {
    "string": lambda client, key: client.get(key),
    "hash": lambda client, key: client.hgetall(key),
    "list": lambda client, key: client.lrange(key, 0, -1),
    "set": lambda client, key: sorted(client.smembers(key)),
}


def contents(server: RedisServer) -> dict:
    """Every key of dbs 0..3 with its type and value."""
    found = {}
    for db in range(4):
        client = server.client(db=db)
        for key in client.keys("*"):
            kind = client.type(key).decode()
            found[(db, key)] = (kind, READERS[kind](client, key))
    return found


def restored_contents(directory: Path) -> dict:
    server = RedisServer(directory, free_port())
    server.start()
    try:
        return contents(server)
    finally:
        server.stop()


def backup(policy_file: Path, expect: int = 0) -> subprocess.CompletedProcess:
    done = hadr_cli(policy_file, "--json", "backup", "redis")
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def complete_backups(policy_file: Path) -> list[dict]:
    listing = assert_schema("list", hadr_cli(policy_file, "--json", "list", check=True).stdout)
    return [b for b in listing["backups"] if b["kind"] == "redis" and b["state"] == "complete"]


@pytest.mark.parametrize("diskless", [False, True], ids=["disk", "diskless"])
def test_snapshot_restores_key_by_key(redis_factory, tmp_path: Path, diskless: bool) -> None:
    server = redis_factory(extra={"repl-diskless-sync": diskless, "repl-diskless-sync-delay": 0})
    fill(server)
    written = contents(server)
    policy_file = policy(tmp_path, server.url)
    result = assert_schema("backup-redis", backup(policy_file).stdout)
    assert result["form"] == ("diskless" if diskless else "disk")
    assert result["keys"] == {"db0": 53, "db1": 53, "db3": 53} and result["rdb_version"] >= 9
    assert result["warnings"] == []
    server.client().set("after", "the snapshot")  # not in the restore
    done = hadr_cli(policy_file, "--json", "restore", "redis", "--latest", "--to", str(tmp_path / "out"), check=True)
    restored = assert_schema("restore-redis", done.stdout)
    assert restored["backup_id"] == result["backup_id"] and restored["keys"] == result["keys"]
    assert restored["reached"] == result["snapshot_at"][:19] + ".000000Z"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dump.rdb"]
    assert restored_contents(tmp_path / "out") == written
    info = assert_schema("info", hadr_cli(policy_file, "--json", "info", check=True).stdout)
    (window,) = info["sources"][0]["restorable_window"]
    assert window["kind"] == "snapshots" and window["instants"] == [result["snapshot_at"]]
    meta = complete_backups(policy_file)[0]["meta"]
    assert meta["form"] == result["form"] and meta["keys_exact"] is True


def test_diskless_delay_is_said(redis_factory, tmp_path: Path) -> None:
    server = redis_factory(extra={"repl-diskless-sync": True, "repl-diskless-sync-delay": 1})
    done = backup(policy(tmp_path, server.url))
    assert "repl-diskless-sync-delay is 1 s" in done.stderr
    assert "CONFIG SET repl-diskless-sync-delay 0" in json.loads(done.stdout)["warnings"][0]


def test_acl_user_with_the_readme_permissions(redis_factory, tmp_path: Path) -> None:
    server = redis_factory(extra={"repl-diskless-sync-delay": 0})
    fill(server)
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "hadr", "on", ">s3cret", "-@all", *ACL.split())
    admin.execute_command("ACL", "SETUSER", "nosync", "on", ">s3cret", "-@all", "+info", "+time", "+ping")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert ACL in readme
    url = f"redis://hadr:s3cret@127.0.0.1:{server.port}/0"
    policy_file = policy(tmp_path, url)
    assert json.loads(backup(policy_file).stdout)["keys"]["db0"] == 53
    check = hadr_cli(policy_file, "check")
    assert check.returncode == 0 and "sync-permitted" in check.stdout, check.stdout + check.stderr
    (tmp_path / "n").mkdir()
    denied = policy(tmp_path / "n", f"redis://nosync:s3cret@127.0.0.1:{server.port}/0")
    done = backup(denied, expect=1)
    assert "NOPERM" in done.stderr and "+sync" in done.stderr
    assert hadr_cli(denied, "check").returncode == 3


def test_wrong_password_fails_clearly(redis_factory, tmp_path: Path) -> None:
    server = redis_factory()
    server.client().config_set("requirepass", "right")
    policy_file = policy(tmp_path, f"redis://:wrong@127.0.0.1:{server.port}/0")
    try:
        done = backup(policy_file, expect=1)
    finally:
        server.client(password="right").config_set("requirepass", "")
    assert "refused the credentials" in done.stderr and "Traceback" not in done.stderr
    assert complete_backups(policy_file) == []


def test_target_before_the_first_snapshot_is_refused(redis_factory, tmp_path: Path) -> None:
    server = redis_factory(extra={"repl-diskless-sync-delay": 0})
    policy_file = policy(tmp_path, server.url)
    backup(policy_file)
    out = tmp_path / "out"
    done = hadr_cli(policy_file, "restore", "redis", "--target-time", "2001-01-01 00:00:00", "--to", str(out))
    assert done.returncode == 2 and "before the oldest snapshot" in done.stderr
    assert not out.exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep").write_text("x")
    done = hadr_cli(policy_file, "restore", "redis", "--latest", "--to", str(occupied))
    assert done.returncode == 2 and "not empty" in done.stderr


def test_corrupted_rdb_is_detected(redis_factory, tmp_path: Path) -> None:
    server = redis_factory(extra={"repl-diskless-sync-delay": 0})
    fill(server)
    policy_file = policy(tmp_path, server.url)
    backup(policy_file)
    assert hadr_cli(policy_file, "verify", "repo", "--deep").returncode == 0
    (stored,) = (tmp_path / "repo").rglob("dump.rdb")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    done = hadr_cli(policy_file, "--json", "verify", "repo", "--deep")
    assert done.returncode == 3
    codes = {f["code"] for f in assert_schema("verify-repo", done.stdout)["findings"] if f["level"] == "error"}
    assert "rdb-unreadable" in codes, codes
    out = tmp_path / "out"
    done = hadr_cli(policy_file, "restore", "redis", "--latest", "--to", str(out))
    assert done.returncode == 1 and not (out / "dump.rdb").exists(), done.stderr


def test_rdb_that_redis_check_rdb_refuses(redis_factory, tmp_path: Path) -> None:
    """An RDB whose bytes the pipeline stores faithfully but Redis cannot load: verify --deep says so."""
    from hadr_backup.redis.checks import check_rdb_objects
    from hadr_backup.repo.repository import open_repo
    from hadr_backup.verify.findings import Report
    from tests.helpers import local_policy

    repo_policy = local_policy(tmp_path / "repo")
    subprocess.run([sys.executable, "-m", "hadr_backup", "--policy", str(policy(tmp_path, "redis://x:1")), "list"])
    with open_repo(repo_policy, write=True) as repo:
        entry = repo.begin_backup("redis", "queue", {"redis_version": "7"})
        stored = repo.put_object(entry.object_prefix + "dump.rdb", [b"REDIS0010" + b"\x00" * 40 + b"\xff" + b"\0" * 8])
        repo.finish_backup(entry, [stored], {"redis_version": "7"}, consistent_at=1.0)
        report = Report("deep")
        check_rdb_objects(repo, [entry], report)
    assert [f.code for f in report.problems] == ["rdb-check-failed"]


PEAK = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)"
)


def peak_rss_mib(policy_file: Path) -> int:
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), "backup", "redis"]
    done = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_100_mb_value_streams_in_bounded_memory(redis_factory, tmp_path: Path) -> None:
    server = redis_factory(extra={"repl-diskless-sync": True, "repl-diskless-sync-delay": 0, "rdbcompression": False})
    server.client().set("small", "x")
    policy_file = policy(tmp_path, server.url)
    baseline = peak_rss_mib(policy_file)
    size = 100 * 2**20
    server.client().setrange("big", size - 1, "!")
    peak = peak_rss_mib(policy_file)
    assert peak < baseline + 60, f"peak {peak} MiB, baseline {baseline} MiB for a {size >> 20} MiB value"
    newest = complete_backups(policy_file)[-1]
    assert newest["raw_size"] > size
    done = hadr_cli(policy_file, "restore", "redis", "--latest", "--to", str(tmp_path / "out"), check=True)
    assert "db0: 2" in done.stdout
