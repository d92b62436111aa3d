"""Two writers on one repository (two hosts on one S3 bucket, two processes on one folder): the lock
lives in the repository, catalog changes are compare-and-swap, and a running backup is judged from its
own heartbeat. Hosts are told apart with UTS namespaces (``unshare -u`` + ``hostname``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hadr_backup.policy.load import load_policy
from hadr_backup.repo.catalog import COMPLETE, FAILED, RUNNING
from hadr_backup.repo.keys import create_key_file
from hadr_backup.repo.repository import init_repo, open_repo
from tests.helpers import write_policy
from tests.integration.pg_support import PgEnv

pytestmark = pytest.mark.integration

WRITER = """
import os, sys
from hadr_backup.policy.load import load_policy
from hadr_backup.repo.repository import open_repo
policy = load_policy(sys.argv[1])
with open_repo(policy, write=True, lock=False) as repo:  # no lock: only compare-and-swap keeps them apart
    for n in range(int(sys.argv[2])):
        entry = repo.begin_backup("pg", sys.argv[3])
        stored = repo.put_object(entry.object_prefix + "data", [os.urandom(2000)])
        repo.finish_backup(entry, [stored])
        print(entry.id, flush=True)
"""

HOLDER = """
import sys, time
from hadr_backup.errors import LockLost
from hadr_backup.policy.load import load_policy
from hadr_backup.repo.repository import open_repo
with open_repo(load_policy(sys.argv[1]), write=True) as repo:
    entry = repo.begin_backup("pg", "main")
    print("began", entry.id, flush=True)
    sys.stdin.readline()
    stored = repo.put_object(entry.object_prefix + "data", [b"late"])
    try:
        repo.finish_backup(entry, [stored])
        print("finished", flush=True)
    except LockLost as error:
        repo.fail_backup(entry, str(error))
        print("lost", flush=True)
"""


def on_host(host: str, argv: list[str]) -> list[str]:
    """``argv`` run in a UTS namespace of its own whose host name is ``host``: another machine, as far
    as hostnames go."""
    return ["unshare", "-u", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *argv]


def s3_policy(s3_server, tmp_path: Path, name: str, **repository) -> Path:
    key = tmp_path / "hadr.key"
    if not key.exists():
        create_key_file(key)
    bucket = f"mw-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    data = {
        "repository": {
            "url": f"s3://{bucket}/repo",
            "endpoint": s3_server.endpoint_url,
            "access_key": "testing",
            "secret_key": "testing",
            **repository,
        },
        "encryption": {"key_file": str(key)},
    }
    return write_policy(tmp_path / name, data)


def with_repository(policy_file: Path, tmp_path: Path, name: str, **repository) -> Path:
    """The same repository under another policy file (another host's own settings)."""
    import yaml

    data = yaml.safe_load(policy_file.read_text())
    data["repository"].update(repository)
    return write_policy(tmp_path / name, data)


@pytest.fixture(params=["local", "s3"])
def shared_policy(request, tmp_path) -> Path:
    if request.param == "s3":
        policy_file = s3_policy(request.getfixturevalue("s3_server"), tmp_path, "p.yaml")
    else:
        key = tmp_path / "hadr.key"
        create_key_file(key)
        policy_file = write_policy(
            tmp_path / "p.yaml", {"repository": {"path": str(tmp_path / "repo")}, "encryption": {"key_file": str(key)}}
        )
    init_repo(load_policy(str(policy_file)))
    return policy_file


def test_concurrent_catalog_writers_never_lose_an_entry(shared_policy: Path) -> None:
    rounds = 12
    writers = [
        subprocess.Popen(
            on_host(host, [sys.executable, "-c", WRITER, str(shared_policy), str(rounds), source]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host, source in (("hosta", "a"), ("hostb", "b"))
    ]
    finished = []
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        finished += out.split()
    assert len(finished) == 2 * rounds
    with open_repo(load_policy(str(shared_policy))) as repo:
        entries = {e.id: e for e in repo.catalog.entries}
        assert repo.warnings == []  # the twin loaded fine, nothing was repaired on the way
    assert {i: entries[i].state for i in finished} == {i: COMPLETE for i in finished}
    assert {entries[i].host for i in finished} == {"hosta", "hostb"}


def test_two_hosts_backing_up_one_cluster_into_one_s3_repository(s3_server, tmp_path: Path) -> None:
    bucket = f"pg-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    env = PgEnv(s3=(s3_server.endpoint_url, bucket))
    try:
        env.sql("create table item as select g as id from generate_series(1, 20000) g")
        # each host has its own lock_dir (as two machines would): the lock must not live there
        policies = [
            with_repository(env.policy_path, tmp_path, f"{host}.yaml", lock_dir=str(tmp_path / host), lock_wait=300)
            for host in ("hosta", "hostb")
        ]
        rounds = 3
        script = "for i in $(seq %d); do %s -m hadr_backup --json --policy %s backup pg || echo FAILED; done"
        runs = [
            subprocess.Popen(
                on_host(host, ["sh", "-c", script % (rounds, sys.executable, policy)]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for host, policy in zip(("hosta", "hostb"), policies, strict=True)
        ]
        succeeded = []
        for run in runs:
            out, err = run.communicate(timeout=600)
            assert "FAILED" not in out, err
            decoder, text = json.JSONDecoder(), out.strip()
            while text:
                result, end = decoder.raw_decode(text)
                succeeded.append(result["backup_id"])
                text = text[end:].strip()
        assert len(succeeded) == 2 * rounds
        listed = json.loads(env.hadr("--json", "list", check=True).stdout)["backups"]
        states = {row["id"]: row["state"] for row in listed}
        assert {i: states.get(i) for i in succeeded} == {i: COMPLETE for i in succeeded}
    finally:
        env.close()


def start_holder(policy_file: Path, host: str) -> tuple[subprocess.Popen, str]:
    holder = subprocess.Popen(
        on_host(host, [sys.executable, "-c", HOLDER, str(policy_file)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = holder.stdout.readline().split()
    assert line[:1] == ["began"], holder.stderr.read()
    return holder, line[1]


def test_a_live_lease_is_never_taken_over(s3_server, tmp_path: Path) -> None:
    policy_file = s3_policy(s3_server, tmp_path, "p.yaml", lock_ttl=2)
    init_repo(load_policy(str(policy_file)))
    holder, _entry = start_holder(policy_file, "hosta")
    try:
        time.sleep(6)  # three TTLs: renewals keep it alive
        other = with_repository(policy_file, tmp_path, "b.yaml", lock_wait=3)
        done = subprocess.run(
            on_host("hostb", [sys.executable, "-m", "hadr_backup", "--policy", str(other), "repair", "catalog"]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert "locked by pid" in done.stderr and "on hosta" in done.stderr
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "finished"
    finally:
        holder.kill()
        holder.wait()


def test_expired_lease_is_taken_over_but_a_beating_backup_is_not_failed(s3_server, tmp_path: Path) -> None:
    policy_file = s3_policy(s3_server, tmp_path, "p.yaml", lock_ttl=2)
    policy = load_policy(str(policy_file))
    init_repo(policy)
    holder, entry_id = start_holder(policy_file, "hosta")
    try:
        os.kill(holder.pid, signal.SIGSTOP)  # a frozen host: no renewal, no heartbeat
        frozen = time.monotonic()
        took = load_policy(str(with_repository(policy_file, tmp_path, "b.yaml", lock_wait=30)))
        with open_repo(took, write=True) as repo:  # waits for the lease to expire, then takes it over
            waited = time.monotonic() - frozen
            assert any("took over a stale lock" in w and "hosta" in w for w in repo.warnings)
            # the lease went, but the heartbeat is younger than 3 TTLs + margin: not judged dead
            assert repo.catalog.get(entry_id).state == RUNNING
        assert waited >= 2 + 5 - 0.5  # TTL + clock margin
        os.kill(holder.pid, signal.SIGCONT)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "lost"  # its lease went: it wrote nothing complete
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait()
    with open_repo(policy) as repo:
        entry = repo.catalog.get(entry_id)
        assert entry.state == FAILED and "taken over" in entry.error


def test_the_keepalive_renews_a_running_backups_heartbeat(shared_policy: Path, tmp_path: Path) -> None:
    quick = load_policy(str(with_repository(shared_policy, tmp_path, "quick.yaml", lock_ttl=0.6)))  # beat: 0.2 s
    with open_repo(quick, write=True) as repo:
        entry = repo.begin_backup("pg", "main")
        began = entry.heartbeat_at
        time.sleep(1.5)
        with open_repo(quick) as reader:
            seen = reader.catalog.get(entry.id)
        assert seen.state == RUNNING and seen.heartbeat_at > began + 0.5
        assert not [w for w in repo.warnings if w.startswith("keepalive")], repo.warnings
        repo.fail_backup(entry, "test over")
    with open_repo(quick) as reader:
        assert reader.catalog.get(entry.id).state == FAILED
