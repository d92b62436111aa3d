"""hadr restore s3 from the mirror (the manifests of `hadr backup s3` runs in the repository), on moto over
HTTP: restores to several instants between the runs against an oracle, a target outside the runs' window,
the source bucket deleted (the restore falls back to the mirror and says so), and a damaged stored content
(exit 3, the key named and not written, everything else restored)."""

from __future__ import annotations

import math
import uuid

from hadr_backup.objectstore.destination import ONE_PUT
from hadr_backup.objectstore.manifest import mirror_records
from hadr_backup.objectstore.versions import state_at
from hadr_backup.policy.load import load_policy
from hadr_backup.repo.repository import open_repo
from hadr_backup.sandbox.seed import reset_bucket
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


def delete_bucket(client, bucket: str) -> None:
    reset_bucket(client, bucket)  # every version and delete marker removed
    client.delete_bucket(Bucket=bucket)


def mirrored_state(policy, bucket: str, at: float) -> list:
    """The records of the bucket at ``at``, as the mirror's manifests have them."""
    with open_repo(load_policy(str(policy))) as repo:
        return list(state_at(mirror_records(repo, "items", bucket), at))


def test_restore_from_the_mirror_before_and_after_the_source_bucket_is_gone(s3_server, tmp_path):
    client = s3_server.client()
    bucket = versioned_bucket(client)
    policy = make_policy(tmp_path / "policy.yaml", s3_server.endpoint_url, bucket)
    hadr_cli(policy, "init", check=True)

    def backup_after(round_: int) -> None:
        if round_ in (1, 4):  # two runs: the second copies only what the first had not seen
            hadr_cli(policy, "backup", "s3", check=True)

    oracle = play_history(client, bucket, 60, 5, seed=5, after_round=backup_after)

    # 1. from the mirror, to instants between and at the runs (a run's consistent_at is a whole second:
    #    the last second of the round before it)
    for round_ in (2, 3, 4):
        at, expected = math.floor(oracle[round_][0]), oracle[round_][1]
        target = f"dst-{uuid.uuid4().hex[:12]}"
        done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, "--from-mirror", at=at)
        assert done.returncode == 0, done.stderr
        assert_schema("restore-s3", report)
        assert report["origin"] == "mirror" and report["window"]["bounded_by"] == "mirror-runs"
        # the source still holds every version: copied from it server-side, checked against the manifests
        assert report["counts"]["copied"] == len(expected) and report["counts"]["streamed"] == 0
        assert report["verification"]["objects"] == len(expected) and report["verification"]["passed"]
        assert bucket_contents(client, target) == expected

    # a version gone from the source is streamed from the mirror instead
    at, expected = math.floor(oracle[3][0]), oracle[3][1]
    gone = mirrored_state(policy, bucket, at)[7]
    client.delete_object(Bucket=bucket, Key=gone.key, VersionId=gone.version_id)
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, "--from-mirror", at=at)
    assert done.returncode == 0, done.stderr
    assert (report["counts"]["copied"], report["counts"]["streamed"]) == (len(expected) - 1, 1)
    assert bucket_contents(client, target) == expected

    # 2. before the first run's listing: outside the mirror's window
    done, _ = restore(policy, "--bucket", bucket, "--to-bucket", "never-made", "--from-mirror", at=oracle[0][0])
    assert done.returncode == 2 and "mirror runs" in done.stderr and "before the oldest" in done.stderr

    # 3. the source bucket deleted: the restore says so and uses the mirror; in place has nowhere to go
    delete_bucket(client, bucket)
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, at=at)
    assert done.returncode == 0, done.stderr
    assert (
        report["counts"]["streamed"] == len(expected)
        and report["origin"] == "mirror"
        and any("does not exist any more" in w for w in report["warnings"])
    )
    assert bucket_contents(client, target) == expected
    done, _ = restore(policy, "--bucket", bucket, "--in-place", at=at)
    assert done.returncode == 2 and "there is nothing to restore in" in done.stderr

    # 4. a stored content damaged: exit 3, that key named and not written, the others restored
    victim = next(record for record in mirrored_state(policy, bucket, at) if record.size > 100)
    stored = tmp_path / "repo" / victim.content.key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, at=at)
    assert done.returncode == 3, done.stderr
    assert_schema("restore-s3", report)
    assert not report["passed"] and report["counts"]["unreadable"][0].startswith(f"{victim.key}: ")
    assert {"key": victim.key, "problem": "missing"}.items() <= report["verification"]["problems"][0].items()
    assert bucket_contents(client, target) == {k: v for k, v in expected.items() if k != victim.key}
    next_second()


def test_a_version_larger_than_one_put_streams_from_the_mirror_as_a_multipart_upload(s3_server, tmp_path):
    client = s3_server.client()
    bucket = versioned_bucket(client)
    large = bytes(range(256)) * (ONE_PUT // 256 + 4099)  # above the in-memory limit of one PutObject
    client.put_object(Bucket=bucket, Key="large.bin", Body=large)
    client.put_object(Bucket=bucket, Key="small.txt", Body=b"small")
    next_second()
    policy = make_policy(tmp_path / "policy.yaml", s3_server.endpoint_url, bucket)
    hadr_cli(policy, "init", check=True)
    hadr_cli(policy, "backup", "s3", check=True)
    at = mirrored_state(policy, bucket, math.inf)[0].last_modified
    delete_bucket(client, bucket)
    target = f"dst-{uuid.uuid4().hex[:12]}"
    done, report = restore(policy, "--bucket", bucket, "--to-bucket", target, at=at)
    assert done.returncode == 0, done.stderr
    assert report["counts"]["streamed"] == 2 and report["verification"]["bytes"] == len(large) + 5
    assert client.get_object(Bucket=target, Key="large.bin")["Body"].read() == large
    assert client.head_object(Bucket=target, Key="large.bin")["ETag"].strip('"').endswith("-2")  # in parts
