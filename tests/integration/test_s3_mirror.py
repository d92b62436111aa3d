"""hadr backup s3 into a mirror bucket (a second moto endpoint, and server-side on the same one), killed
with -9 and run again, through transient faults, and with versions deleted before their copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hadr_backup.objectstore.manifest import mirror_records, open_content
from hadr_backup.objectstore.mirror import run_backup_s3
from hadr_backup.objectstore.versions import state_at
from hadr_backup.policy.load import load_policy
from hadr_backup.repo.repository import init_repo, open_repo
from hadr_backup.sandbox.servers import S3Server
from tests.faultproxy import FaultProxy
from tests.helpers import hadr_cli
from tests.integration.s3_support import another_s3, bucket_policy, source_records, versioned_bucket, write_history
from tests.integration.test_s3_backup import BIG, current, identities
from tests.schema_check import assert_schema


@pytest.fixture
def second_s3(tmp_path: Path) -> Iterator[S3Server]:
    """Another S3 endpoint: the mirror's "other site"."""
    with another_s3(tmp_path / "moto-mirror") as server:
        yield server


def mirror_entry(server: S3Server, bucket: str, **extra) -> dict:
    return {
        "bucket": bucket,
        "endpoint": server.endpoint_url,
        "access_key": "testing",
        "secret_key": "testing",
        **extra,
    }


def assert_mirror_holds_the_source(policy, client, bucket: str, mirror_client) -> None:
    """Every source version exactly once in the merged manifests; the state now read back through
    open_content (and, for mode mirror, from the mirror bucket itself)."""
    with open_repo(policy) as repo:
        merged = list(mirror_records(repo, "items", bucket))
        listed = source_records(client, bucket)
        assert identities(merged) == identities(listed)
        state = list(state_at(merged, time.time()))
        assert {r.key: r.version_id for r in state} == current(listed)
        for record in state:
            body = b"".join(open_content(repo, policy, record))
            assert body == client.get_object(Bucket=bucket, Key=record.key)["Body"].read()
            if record.content.kind == "mirror":
                held = mirror_client.get_object(
                    Bucket=record.content.bucket, Key=record.content.key, VersionId=record.content.version_id
                )
                assert held["Body"].read() == body


def test_mirror_to_another_endpoint_and_server_side_on_the_same(s3_server, second_s3, tmp_path: Path) -> None:
    client, other = s3_server.client(), second_s3.client()
    bucket = versioned_bucket(client, f"src-{time.time_ns()}")
    write_history(client, bucket, keys=30, rounds=4)
    client.put_object(Bucket=bucket, Key="items/big.bin", Body=BIG)  # read here, written as a multipart upload
    away = versioned_bucket(other, "dr-copy")
    policy_file = bucket_policy(
        tmp_path, s3_server.endpoint_url, [bucket], mirror=mirror_entry(second_s3, away, prefix="site-a")
    )
    hadr_cli(policy_file, "init", check=True)
    result = assert_schema("backup-s3", hadr_cli(policy_file, "--json", "backup", "s3", check=True).stdout)
    assert result["mode"] == "mirror" and result["mirror"]["server_side_copy"] is False
    assert result["mirror"]["prefix"] == "site-a/"
    policy = load_policy(str(policy_file))
    assert_mirror_holds_the_source(policy, client, bucket, other)
    keys = {v["Key"] for v in other.list_object_versions(Bucket=away).get("Versions", [])}
    assert keys and all(k.startswith(f"site-a/{bucket}/items/") for k in keys)
    assert not (tmp_path / "repo" / "content").exists()  # the content went to the mirror only

    near = versioned_bucket(client, f"near-{time.time_ns()}")
    # one worker: moto answers a CopyObject with the destination key's newest version, so two copies of one
    # key's versions at once can swap their answers (and hadr's ETag check rightly fails the run)
    same = bucket_policy(
        tmp_path / "same", s3_server.endpoint_url, [bucket], mirror=mirror_entry(s3_server, near), workers=1
    )
    hadr_cli(same, "init", check=True)
    result = assert_schema("backup-s3", hadr_cli(same, "--json", "backup", "s3", check=True).stdout)
    assert result["mirror"]["server_side_copy"] is True
    assert_mirror_holds_the_source(load_policy(str(same)), client, bucket, client)
    verified = assert_schema("verify-repo", hadr_cli(same, "--json", "verify", "repo", "--deep").stdout)
    assert verified["passed"] and verified["checked"]["s3_content"] > 0


def test_an_unversioned_mirror_bucket_is_refused_with_exit_2(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"src-{time.time_ns()}")
    client.put_object(Bucket=bucket, Key="k", Body=b"v")
    plain = f"plain-{time.time_ns()}"
    client.create_bucket(Bucket=plain)
    policy_file = bucket_policy(tmp_path, s3_server.endpoint_url, [bucket], mirror=mirror_entry(s3_server, plain))
    hadr_cli(policy_file, "init", check=True)
    done = hadr_cli(policy_file, "backup", "s3")
    assert done.returncode == 2 and f"mirror bucket {plain}" in done.stderr and "not versioned" in done.stderr
    assert "s3" not in hadr_cli(policy_file, "list", check=True).stdout.split("no backups yet")[0]


def start_backup(policy_file: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), "backup", "s3"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before it could be killed mid-copy"
        assert time.monotonic() < deadline, "the run copied nothing in time"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("mode", ["mirror", "repository"])
def test_a_run_killed_mid_copy_is_failed_and_the_rerun_records_each_version_once(
    s3_server, tmp_path: Path, mode: str
) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"kill-{time.time_ns()}")
    write_history(client, bucket, keys=400, rounds=4)
    total = len(source_records(client, bucket))
    extra = (
        {"mirror": mirror_entry(s3_server, versioned_bucket(client, f"km-{time.time_ns()}"))}
        if mode == "mirror"
        else {}
    )
    policy_file = bucket_policy(tmp_path, s3_server.endpoint_url, [bucket], workers=1, **extra)
    hadr_cli(policy_file, "init", check=True)
    repo_dir = tmp_path / "repo"

    def copied() -> int:
        if mode == "mirror":
            listed = client.list_object_versions(Bucket=extra["mirror"]["bucket"], MaxKeys=100)
            return len(listed.get("Versions", []))
        return sum(1 for _ in (repo_dir / "content").rglob("*")) if (repo_dir / "content").exists() else 0

    kill_when(start_backup(policy_file), lambda: copied() >= 60)
    assert copied() < total  # killed mid-copy
    listing = assert_schema("list", hadr_cli(policy_file, "--json", "list", check=True).stdout)
    assert [b["state"] for b in listing["backups"]] in (["running"], ["failed"])
    if mode == "repository":
        report = assert_schema("verify-repo", hadr_cli(policy_file, "--json", "verify", "repo").stdout)
        leftover = [f for f in report["findings"] if f["code"] == "content-leftover"]
        assert report["passed"] and leftover and leftover[0]["level"] == "warning"
        left = {p.name for p in (repo_dir / "content").rglob("*") if p.is_file()}

    rerun = assert_schema("backup-s3", hadr_cli(policy_file, "--json", "backup", "s3", check=True).stdout)
    assert rerun["parent"] is None and rerun["buckets"][bucket]["new"] == total
    listing = assert_schema("list", hadr_cli(policy_file, "--json", "list", check=True).stdout)
    assert [b["state"] for b in listing["backups"]] == ["failed", "complete"]
    assert not list((repo_dir / "backups").glob(f"s3/items/{listing['backups'][0]['id']}/**/*.jsonl"))
    policy = load_policy(str(policy_file))
    assert_mirror_holds_the_source(policy, client, bucket, client)
    if mode == "mirror":  # the killed run's copies were adopted: one mirror version per source version
        held = source_records(client, extra["mirror"]["bucket"])
        assert len(held) == sum(not r.deleted for r in source_records(client, bucket))
        assert rerun["buckets"][bucket]["written"] < rerun["buckets"][bucket]["bytes"]
    if mode == "repository":
        now = {p.name for p in (repo_dir / "content").rglob("*") if p.is_file()}
        assert left <= now  # the killed run's content was reused, not stored again
        report = assert_schema("verify-repo", hadr_cli(policy_file, "--json", "verify", "repo").stdout)
        assert report["passed"] and not [f for f in report["findings"] if f["code"] == "content-leftover"]


def test_transient_faults_are_retried_without_loss(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"flaky-{time.time_ns()}")
    write_history(client, bucket, keys=120, rounds=3)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.fail(query="versions", status=500, code="InternalError", times=3)  # listing pages
        proxy.fail(method="GET", query="versionId", status=503, code="SlowDown", times=6)  # version reads
        proxy.fail(method="GET", path=f"/{bucket}/items/0000", status=503, code="ServiceUnavailable", times=4)
        policy = load_policy(str(bucket_policy(tmp_path, proxy.endpoint_url, [bucket])))
        init_repo(policy)
        run = run_backup_s3(policy, page_size=50)
        assert len(proxy.requests(faulted=True)) == 13
    assert run.buckets[bucket].new == run.buckets[bucket].records == len(source_records(client, bucket))
    assert run.warnings == []
    assert_mirror_holds_the_source(policy, client, bucket, client)


def test_a_version_deleted_before_its_copy_is_skipped_with_a_warning(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"gone-{time.time_ns()}")
    write_history(client, bucket, keys=20, rounds=2)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.fail(method="GET", path=f"/{bucket}/items/00004.bin", status=404, code="NoSuchVersion")
        policy = load_policy(str(bucket_policy(tmp_path, proxy.endpoint_url, [bucket])))
        init_repo(policy)
        run = run_backup_s3(policy)
        proxy.clear()
        again = run_backup_s3(policy)  # still listed, so the next run copies it
    gone = [r for r in source_records(client, bucket) if r.key == "items/00004.bin" and not r.deleted]
    assert gone and run.buckets[bucket].skipped == len(gone)
    assert run.warnings and "items/00004.bin" in run.warnings[0] and "deleted before" in run.warnings[0]
    assert run.state == "complete"
    assert again.buckets[bucket].new == len(gone) and again.warnings == []
    assert_mirror_holds_the_source(policy, client, bucket, client)
