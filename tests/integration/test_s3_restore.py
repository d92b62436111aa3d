"""hadr restore s3 against moto in server mode over HTTP: a history of overwrites, deletes and re-creations
(≥ 2,500 versions, so that listings page), restored to several instants into new buckets and under a
prefix and compared with an oracle; in place and undone; a dry run; targets outside the window; a
destination that is not empty; a bucket that does not exist; credentials refused."""

from __future__ import annotations

import time
import uuid

import pytest

from hadr_backup.timefmt import rfc3339
from tests.faultproxy import FaultProxy
from tests.helpers import hadr_cli
from tests.integration.s3_history import (
    bucket_contents,
    make_policy,
    next_second,
    play_history,
    restore,
    versioned_bucket,
)
from tests.schema_check import assert_schema

KEYS = 300
ROUNDS = 11


@pytest.fixture(scope="module")
def history(s3_server, tmp_path_factory):
    """One source bucket with its oracle, shared by the tests that only read it."""
    client = s3_server.client()
    bucket = versioned_bucket(client)
    oracle = play_history(client, bucket, KEYS, ROUNDS)
    policy = make_policy(tmp_path_factory.mktemp("s3restore") / "policy.yaml", s3_server.endpoint_url, bucket)
    return client, bucket, oracle, policy


def test_the_history_pages_through_thousands_of_versions(history):
    client, bucket, _oracle, _policy = history
    versions = markers = 0
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions += len(page.get("Versions", ()))
        markers += len(page.get("DeleteMarkers", ()))
    assert versions + markers >= 2500 and markers >= 300


@pytest.mark.parametrize("round_", [0, 4, 7, ROUNDS - 1])
def test_restore_to_a_new_bucket_equals_the_oracle(history, round_):
    client, bucket, oracle, policy = history
    at, expected = oracle[round_]
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, at=at)
    assert done.returncode == 0, done.stderr
    assert_schema("restore-s3", report)
    assert bucket_contents(client, target) == expected
    assert report["created_bucket"] and report["origin"] == "source" and report["mode"] == "bucket"
    assert report["counts"]["objects"] == len(expected) == report["counts"]["written"]
    assert report["counts"]["copied"] == len(expected)
    assert report["verification"] == {
        "objects": len(expected),
        "bytes": sum(map(len, expected.values())),
        "mismatches": 0,
        "problems": [],
        "passed": True,
    }


def test_restore_under_a_prefix_and_the_human_output(history):
    client, bucket, oracle, policy = history
    at, expected = oracle[5]
    target = f"dst-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=target)
    client.put_object(Bucket=target, Key="elsewhere/keep.txt", Body=b"not under the prefix")
    done = hadr_cli(
        policy, "restore", "s3", "--bucket", bucket, "--to-bucket", target, "--to-prefix", "restored/at-5",
        "--target-time", rfc3339(at),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    size = sum(map(len, expected.values()))
    assert f"verified: {len(expected)} objects, {size} bytes" in done.stdout and "0 mismatches" in done.stdout
    assert bucket_contents(client, target, "restored/at-5/") == expected
    assert bucket_contents(client, target, "elsewhere/") == {"keep.txt": b"not under the prefix"}


def test_a_dry_run_counts_and_writes_nothing(history):
    client, bucket, oracle, policy = history
    at, expected = oracle[3]
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, "--dry-run", at=at)
    assert done.returncode == 0, done.stderr
    assert_schema("restore-s3", report)
    counts = report["counts"]
    assert (counts["written"], counts["written_bytes"], counts["deleted"]) == (
        len(expected),
        sum(map(len, expected.values())),
        0,
    )
    assert report["dry_run"] and report["verification"] is None and report["created_bucket"]
    assert target not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_a_target_outside_the_window_is_refused_and_nothing_is_written(history):
    client, bucket, oracle, policy = history
    first = min(v["LastModified"].timestamp() for v in client.list_object_versions(Bucket=bucket)["Versions"])
    target = f"dst-{uuid.uuid4().hex[:12]}"
    for at in (first - 5, time.time() + 3600):
        done, _ = restore(policy, "--bucket", bucket, "--to-bucket", target, at=at)
        assert done.returncode == 2, done.stderr
        assert "restores to" in done.stderr and "oldest version" in done.stderr and not done.stdout
    assert target not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_a_destination_that_is_not_empty_is_refused_unless_forced(history):
    client, bucket, oracle, policy = history
    at, expected = oracle[2]
    target = f"dst-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=target)
    stray = {"zz-stray": b"stray", sorted(expected)[0]: b"old content"}
    for key, body in stray.items():
        client.put_object(Bucket=target, Key=key, Body=body)
    done, _ = restore(policy, "--bucket", bucket, "--to-bucket", target, at=at)
    assert done.returncode == 2 and "2 objects are already in s3://" in done.stderr and "--force" in done.stderr
    assert bucket_contents(client, target) == stray
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, "--force", at=at)
    assert done.returncode == 0, done.stderr
    assert bucket_contents(client, target) == expected
    assert report["counts"]["deleted"] == 1 and report["verification"]["passed"]


def test_bad_usage_is_refused_with_exit_2(history):
    _client, bucket, oracle, policy = history
    at = oracle[1][0]
    cases = [
        (["--bucket", bucket], "--to-bucket B2"),
        (["--bucket", bucket, "--to-bucket", "x-dst", "--in-place"], "--to-bucket B2"),
        (["--bucket", "not-this-sources", "--to-bucket", "x-dst"], "is not one of source items's buckets"),
        (["--bucket", bucket, "--to-bucket", bucket], "is the bucket being restored"),
        (["--bucket", bucket, "--in-place", "--to-prefix", "p"], "--to-prefix goes with --to-bucket"),
    ]
    for args, message in cases:
        done, _ = restore(policy, *args, at=at)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    done = hadr_cli(policy, "restore", "s3", "--bucket", bucket, "--to-bucket", "x-dst", "--target-time", "yesterday")
    assert done.returncode == 2 and "is not a time" in done.stderr


def test_in_place_restore_and_its_undo(s3_server, tmp_path):
    client = s3_server.client()
    bucket = versioned_bucket(client)
    oracle = play_history(client, bucket, 80, 5, seed=3)
    policy = make_policy(tmp_path / "policy.yaml", s3_server.endpoint_url, bucket)
    original = bucket_contents(client, bucket)
    assert original == oracle[-1][1]
    at, expected = oracle[1]
    versions_before = len(client.list_object_versions(Bucket=bucket).get("Versions", []))

    # a dry run counts the keys that differ, and writes nothing
    done, dry = restore(policy, "--bucket", bucket, "--in-place", "--dry-run", at=at)
    assert done.returncode == 0, done.stderr
    differ = sum(1 for key, body in expected.items() if original.get(key) != body)
    absent = sum(1 for key in original if key not in expected)
    assert (dry["counts"]["written"], dry["counts"]["deleted"]) == (differ, absent)
    assert len(client.list_object_versions(Bucket=bucket).get("Versions", [])) == versions_before

    done, report = restore(policy, "--bucket", bucket, "--in-place", at=at)
    assert done.returncode == 0, done.stderr
    assert_schema("restore-s3", report)
    assert bucket_contents(client, bucket) == expected
    assert (report["counts"]["written"], report["counts"]["deleted"]) == (differ, absent)
    assert report["counts"]["unchanged"] == len(expected) - differ and report["verification"]["passed"]

    # undone: in place again, to the instant the first restore names
    next_second()
    undo_at = report["undo_time"]
    assert report["undo_command"].endswith(f"--in-place --target-time {undo_at}")
    done, undo = restore(policy, "--bucket", bucket, "--in-place", "--target-time", undo_at)
    assert done.returncode == 0, done.stderr
    assert bucket_contents(client, bucket) == original
    assert undo["verification"]["objects"] == len(original)


def test_in_place_needs_versioning(s3_server, tmp_path):
    client = s3_server.client()
    bucket = f"plain-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="a", Body=b"a")
    policy = make_policy(tmp_path / "policy.yaml", s3_server.endpoint_url, bucket)
    next_second()
    done, _ = restore(policy, "--bucket", bucket, "--in-place", at=time.time() - 1)
    assert done.returncode == 2 and "versioning is not enabled" in done.stderr
    assert bucket_contents(client, bucket) == {"a": b"a"}


def test_a_bucket_that_does_not_exist_and_refused_credentials_exit_2(s3_server, tmp_path):
    policy = make_policy(tmp_path / "policy.yaml", s3_server.endpoint_url, "no-such-bucket-here")
    done, _ = restore(policy, "--bucket", "no-such-bucket-here", "--to-bucket", "x-dst", at=time.time() - 60)
    assert done.returncode == 2 and "no-such-bucket-here" in done.stderr
    assert "Traceback" not in done.stderr

    client = s3_server.client()
    bucket = versioned_bucket(client)
    client.put_object(Bucket=bucket, Key="a", Body=b"a")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.fail(status=403, code="InvalidAccessKeyId")
        policy = make_policy(tmp_path / "denied.yaml", proxy.endpoint_url, bucket)
        done, _ = restore(policy, "--bucket", bucket, "--to-bucket", "x-dst", at=time.time() - 60)
    assert done.returncode == 2 and f"access to s3://{bucket}" in done.stderr and "was denied" in done.stderr
    assert "access_key and secret_key" in done.stderr and "Traceback" not in done.stderr

    policy = make_policy(tmp_path / "down.yaml", "http://127.0.0.1:9", bucket)
    done, _ = restore(policy, "--bucket", bucket, "--to-bucket", "x-dst", at=time.time() - 60)
    assert done.returncode == 2 and "cannot reach the S3 endpoint" in done.stderr


def test_the_verification_names_keys_that_differ_are_missing_or_extra(history):
    from hadr_backup.objectstore.client import source_client
    from hadr_backup.objectstore.destination import Destination
    from hadr_backup.objectstore.history import SourceHistory
    from hadr_backup.objectstore.verifyrestore import verify_restore
    from hadr_backup.policy.load import load_policy

    client, bucket, oracle, policy_path = history
    at, expected = oracle[6]
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, _ = restore(policy_path, "--bucket", bucket, "--to-bucket", target, at=at)
    assert done.returncode == 0, done.stderr
    keys = sorted(key for key, body in expected.items() if body)
    client.put_object(Bucket=target, Key=keys[3], Body=b"x" * len(expected[keys[3]]))  # same size, other bytes
    client.delete_object(Bucket=target, Key=keys[5])
    client.put_object(Bucket=target, Key="zz-extra", Body=b"1")

    source = load_policy(str(policy_path)).sources.buckets_named("items")
    bucket_client = source_client(source)
    history_ = SourceHistory(bucket_client, source, bucket)
    verification = verify_restore(history_, Destination(bucket_client, target), history_.state(at), workers=4)
    assert verification.mismatches == 3 and not verification.passed
    found = {(problem.key, problem.problem) for problem in verification.problems}
    assert found == {(keys[3], "sha256"), (keys[5], "missing"), ("zz-extra", "extra")}
    assert verification.objects == len(expected) - 2


def test_transient_answers_are_retried_without_loss(s3_server, tmp_path):
    client = s3_server.client()
    bucket = versioned_bucket(client)
    oracle = play_history(client, bucket, 40, 2, seed=11)
    at, expected = oracle[-1]
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.fail(method="PUT", status=503, code="SlowDown", times=6)  # CopyObject is a PUT
        proxy.fail(method="GET", query="versions", status=500, code="InternalError", times=2)
        proxy.fail(method="GET", status=503, code="ServiceUnavailable", times=3)
        policy = make_policy(tmp_path / "policy.yaml", proxy.endpoint_url, bucket)
        target = f"dst-{uuid.uuid4().hex[:12]}"
        done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, at=at)
        faulted = [seen for seen in proxy.seen if seen.faulted]
    assert done.returncode == 0, done.stderr
    assert len(faulted) == 11 and report["verification"]["passed"]
    assert bucket_contents(client, target) == expected


def test_keys_with_spaces_unicode_and_plus_signs_are_restored_and_verified(s3_server, tmp_path):
    client = s3_server.client()
    bucket = versioned_bucket(client)
    keys = ["a b/c d.txt", "dir/ü-umlaut.bin", "x+y=z", "percent%20not-a-space", "日本/ファイル", "zz/", "empty"]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"" if key == "empty" else key.encode() * 3)
    next_second()
    at = time.time() - 0.5
    client.put_object(Bucket=bucket, Key="x+y=z", Body=b"later")
    client.delete_object(Bucket=bucket, Key="a b/c d.txt")
    next_second()
    policy = make_policy(tmp_path / "policy.yaml", s3_server.endpoint_url, bucket)
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, "--to-prefix", "back up/", at=at)
    assert done.returncode == 0, done.stderr
    assert bucket_contents(client, target, "back up/") == {k: b"" if k == "empty" else k.encode() * 3 for k in keys}
    assert report["verification"]["objects"] == len(keys)
    done, report = restore(policy, "--bucket", bucket, "--in-place", at=at)
    assert done.returncode == 0, done.stderr
    assert (report["counts"]["written"], report["verification"]["objects"]) == (2, len(keys))
