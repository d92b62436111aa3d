"""`hadr restore redis --into URL` on real redis-server processes: into an empty instance from a snapshot
(replica path, key by key and TTLs) and from the AOF archive at a second T (against the PITR oracle); a
target holding keys refused touching nothing, then replaced with --force; the DUMP/RESTORE fallback for a
target whose REPLICAOF is renamed away and for an ACL user without +replicaof (TTLs kept, masterauth put
back); wrong password, unreachable or bad URLs, a replica target; a target killed mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hadr_backup.procs import free_port, port_open, wait_until
from hadr_backup.sandbox.servers import RedisServer
from tests.helpers import hadr_cli
from tests.integration.test_redis_aof_archive import archivable
from tests.integration.test_redis_aof_archive import policy as aof_policy
from tests.integration.test_redis_pitr import run_writer_archiving, utc
from tests.integration.test_redis_snapshots import backup, contents, fill, policy
from tests.schema_check import assert_schema

# what the README names for each path
REPLICA_ACL = "+ping +info +select +config|get +config|set +replicaof"
COPY_ACL = "+ping +info +select +flushall +restore ~*"
TTL_KEYS = {f"ttl:{i}": 3600 + i for i in range(20)}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """hadr's temporary directories go here (TMPDIR): the tests check that none is left behind."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def source_with_snapshot(redis_factory, tmp_path: Path) -> tuple[RedisServer, Path, dict]:
    """A source with keys in three dbs and keys with a TTL, snapshotted; (server, policy, contents)."""
    server = redis_factory(extra={"repl-diskless-sync-delay": 0})
    fill(server)
    for key, ttl in TTL_KEYS.items():
        server.client(db=1).set(key, "expiring", ex=ttl)
    policy_file = policy(tmp_path, server.url)
    backup(policy_file)
    server.client().set("after", "the snapshot")  # not restored
    written = contents(server)
    del written[(0, b"after")]
    return server, policy_file, written


def into(policy_file: Path, url: str, *args: str, expect: int = 0):
    done = hadr_cli(policy_file, "--json", "restore", "redis", "--into", url, *args)
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    if expect == 0:
        return assert_schema("restore-redis", done.stdout)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ttls(server: RedisServer) -> dict[str, int]:
    client = server.client(db=1)
    return {key: client.ttl(key) for key in TTL_KEYS}


def assert_ttls_kept(server: RedisServer) -> None:
    for key, ttl in ttls(server).items():
        assert TTL_KEYS[key] - 120 <= ttl <= TTL_KEYS[key], f"{key}: TTL {ttl}, set {TTL_KEYS[key]}"


def assert_cleaned_up(result: dict, private_tmp: Path) -> None:
    assert list(private_tmp.iterdir()) == [], "hadr left temporary files"
    scratch_port = int(result["into"]["scratch"].rsplit(":", 1)[1])
    assert not port_open(scratch_port), "the scratch server still runs"


def test_into_an_empty_instance_from_a_snapshot(redis_factory, tmp_path: Path, private_tmp: Path) -> None:
    _, policy_file, written = source_with_snapshot(redis_factory, tmp_path)
    target = redis_factory()
    target.client().config_set("masterauth", "the-old-one")
    result = into(policy_file, target.url, "--latest")
    assert result["to"] is None and result["from"] == "snapshot" and result["files"] == ["dump.rdb"]
    assert result["into"]["path"] == "replica" and "REPLICAOF accepted" in result["into"]["why"]
    assert result["into"]["target"] == f"127.0.0.1:{target.port}" and result["into"]["replaced"] == {}
    assert result["keys"] == result["into"]["keys"] == {"db0": 53, "db1": 73, "db3": 53}
    assert contents(target) == written
    assert_ttls_kept(target)
    client = target.client()
    assert client.info("replication")["role"] == "master"
    assert client.config_get("masterauth")["masterauth"] == "the-old-one"
    client.set("writable", "yes")  # a primary again, not a read-only replica
    assert_cleaned_up(result, private_tmp)
    # the human output says the path and the instant
    target.client().flushall()
    done = hadr_cli(policy_file, "restore", "redis", "--latest", "--into", target.url, check=True)
    assert "replica of a scratch redis-server" in done.stdout and "reached" in done.stdout


def test_into_from_the_aof_archive_at_a_second(redis_factory, tmp_path: Path, private_tmp: Path) -> None:
    server = archivable(redis_factory)
    policy_file = aof_policy(tmp_path, server)
    writer = run_writer_archiving(server, policy_file, seconds=5, archive_every=2.0)
    seconds = sorted({before for before, after in writer.written.values() if before == after})
    second = seconds[len(seconds) // 2]
    target = redis_factory()
    result = into(policy_file, target.url, "--target-time", utc(second))
    assert result["from"] == "aof" and result["into"]["path"] == "replica"
    assert result["reached"].startswith(utc(second).replace(" ", "T"))
    keys = {key.decode() for key in target.client().keys("*")}
    assert writer.must_hold(second) <= keys, f"missing {writer.must_hold(second) - keys}"
    assert not keys & writer.must_lack(second), f"later writes {keys & writer.must_lack(second)}"
    assert result["into"]["keys"] == {"db0": len(keys)}
    assert_cleaned_up(result, private_tmp)


def test_a_target_holding_keys_is_refused_then_replaced_with_force(redis_factory, tmp_path: Path) -> None:
    _, policy_file, written = source_with_snapshot(redis_factory, tmp_path)
    target = redis_factory()
    target.client(db=0).mset({"mine:1": "a", "mine:2": "b"})
    target.client(db=2).set("mine:3", "c")
    before = contents(target)
    done = into(policy_file, target.url, "--latest", expect=2)
    assert "holds 3 keys (db0: 2, db2: 1)" in done.stderr and "nothing was written" in done.stderr, done.stderr
    assert "--force" in done.stderr
    assert contents(target) == before
    result = into(policy_file, target.url, "--latest", "--force")
    assert result["into"]["replaced"] == {"db0": 2, "db2": 1} and result["into"]["path"] == "replica"
    assert contents(target) == written


def renamed_replicaof(redis_factory, tmp_path: Path) -> RedisServer:
    conf = tmp_path / "renamed.conf"
    conf.write_text('rename-command REPLICAOF ""\nrename-command SLAVEOF ""\n')
    return redis_factory(extra={"include": str(conf)})


def test_copy_when_replicaof_is_renamed_away(redis_factory, tmp_path: Path, private_tmp: Path) -> None:
    _, policy_file, written = source_with_snapshot(redis_factory, tmp_path)
    target = renamed_replicaof(redis_factory, tmp_path)
    target.client(db=5).set("old", "data")
    target.client().config_set("masterauth", "kept")
    result = into(policy_file, target.url, "--latest", "--force")
    assert result["into"]["path"] == "copy" and "unknown command" in result["into"]["why"], result["into"]
    assert result["into"]["replaced"] == {"db5": 1}
    assert contents(target) == written and target.client(db=5).dbsize() == 0
    assert_ttls_kept(target)
    assert target.client().config_get("masterauth")["masterauth"] == "kept"
    assert_cleaned_up(result, private_tmp)


def test_acl_users_with_the_readme_permissions(redis_factory, tmp_path: Path) -> None:
    _, policy_file, written = source_with_snapshot(redis_factory, tmp_path)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert REPLICA_ACL in readme and COPY_ACL in readme
    for acl, path in ((COPY_ACL + " +config|get +config|set", "copy"), (REPLICA_ACL, "replica")):
        target = redis_factory()
        admin = target.client()
        admin.execute_command("ACL", "SETUSER", "restorer", "on", ">pw", "-@all", *acl.split())
        admin.config_set("masterauth", "kept")
        admin.set("old", "x")
        result = into(policy_file, f"redis://restorer:pw@127.0.0.1:{target.port}/0", "--latest", "--force")
        assert result["into"]["path"] == path, result["into"]
        if path == "copy":
            assert "NOPERM" in result["into"]["why"] and "replicaof" in result["into"]["why"]
        assert contents(target) == written
        assert_ttls_kept(target)
        assert admin.config_get("masterauth")["masterauth"] == "kept"


def test_an_acl_user_that_may_not_restore_is_refused_touching_nothing(redis_factory, tmp_path: Path) -> None:
    _, policy_file, _ = source_with_snapshot(redis_factory, tmp_path)
    target = renamed_replicaof(redis_factory, tmp_path)
    admin = target.client()
    admin.execute_command("ACL", "SETUSER", "weak", "on", ">pw", "-@all", "+ping", "+info", "+select", "+flushall")
    admin.set("old", "x")
    before = contents(target)
    done = into(policy_file, f"redis://weak:pw@127.0.0.1:{target.port}/0", "--latest", "--force", expect=2)
    assert "nothing was written" in done.stderr and "restore" in done.stderr.lower(), done.stderr
    assert contents(target) == before


def test_bad_urls_and_credentials_exit_2(redis_factory, tmp_path: Path) -> None:
    source = redis_factory(extra={"repl-diskless-sync-delay": 0})
    policy_file = policy(tmp_path, source.url)
    backup(policy_file)
    target = redis_factory()
    target.client().config_set("requirepass", "right")
    try:
        done = into(policy_file, f"redis://:wrong@127.0.0.1:{target.port}/0", "--latest", expect=2)
        assert "refused the credentials" in done.stderr and "nothing was written" in done.stderr
        assert "--into URL" in done.stderr
    finally:
        target.client(password="right").config_set("requirepass", "")
    done = into(policy_file, f"redis://127.0.0.1:{free_port()}/0", "--latest", expect=2)
    assert "cannot restore into" in done.stderr and "nothing was written" in done.stderr, done.stderr
    done = into(policy_file, "http://127.0.0.1:1/", "--latest", expect=2)
    assert "not a Redis URL" in done.stderr
    done = hadr_cli(policy_file, "restore", "redis", "--latest", "--into", target.url, "--to", str(tmp_path / "d"))
    assert done.returncode == 2 and "one of --to DIR or --into URL" in done.stderr
    assert not (tmp_path / "d").exists()
    for bind in ("somewhere", "192.0.2.1"):  # not an address, not one of this host
        done = into(policy_file, target.url, "--latest", "--scratch-bind", bind, expect=2)
        assert "is not an IP address of this host" in done.stderr, done.stderr
    replica = redis_factory()
    replica.client().replicaof("127.0.0.1", source.port)
    done = into(policy_file, replica.url, "--latest", expect=2)
    assert f"is a replica of 127.0.0.1:{source.port}" in done.stderr, done.stderr


def test_a_target_killed_mid_way_fails_saying_its_state(redis_factory, tmp_path: Path, private_tmp: Path) -> None:
    source = redis_factory(extra={"repl-diskless-sync-delay": 0, "enable-debug-command": "yes"})
    source.client().execute_command("DEBUG", "POPULATE", 300_000, "key", 100)
    policy_file = policy(tmp_path, source.url)
    backup(policy_file)
    target = redis_factory()
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), "--json", "restore", "redis"]
    process = subprocess.Popen(
        [*argv, "--latest", "--into", target.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    client = target._control_client(timeout=1)
    became_replica = wait_until(lambda: _role(client) == "slave" or process.poll() is not None, 300, 0.005)
    assert became_replica and process.poll() is None, "the restore ended before the target became a replica"
    os.kill(target.pid, signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, f"exit {process.returncode}\n{out}\n{err}"
    assert "failed mid-way" in err and "REPLICAOF NO ONE" in err and "Traceback" not in err, err
    assert list(private_tmp.iterdir()) == []


def _role(client) -> str | None:
    try:
        return client.info("replication")["role"]
    except Exception:  # noqa: BLE001 - not answering yet counts as "not yet"
        return None


def test_scratch_bind_is_said(redis_factory, tmp_path: Path) -> None:
    _, policy_file, written = source_with_snapshot(redis_factory, tmp_path)
    target = redis_factory()
    result = into(policy_file, target.url, "--latest", "--scratch-bind", "0.0.0.0")
    assert result["into"]["scratch"].startswith("0.0.0.0:") and result["into"]["path"] == "replica"
    assert contents(target) == written and result["warnings"] == []
