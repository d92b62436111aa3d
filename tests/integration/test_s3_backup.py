"""hadr backup s3 against moto over HTTP: paged listings with delete markers on page edges, incremental
runs, content stored once, the manifests giving back the bucket's state at T, and bad input refused."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hadr_backup import engines
from hadr_backup.objectstore.checks import referenced_content
from hadr_backup.objectstore.manifest import mirror_records, open_content
from hadr_backup.objectstore.mirror import run_backup_s3
from hadr_backup.objectstore.versions import state_at
from hadr_backup.policy.load import load_policy
from hadr_backup.procs import free_port
from hadr_backup.repo import layout
from hadr_backup.repo.repository import init_repo, open_repo
from hadr_backup.sandbox.servers import S3Server
from tests.helpers import hadr_cli
from tests.integration.s3_support import another_s3, bucket_policy, source_records, versioned_bucket, write_history
from tests.schema_check import assert_schema

BIG = bytes(range(256)) * (9 * 4096 + 17)  # 9 MiB and a bit: more than copy.INLINE_MAX


def page_size_with_markers_on_edges(client, bucket: str) -> int:
    """A page size at which some page of the listing ends on a delete marker."""
    for size in range(37, 80):
        request, found = {"Bucket": bucket, "MaxKeys": size}, False
        while not found:
            page = client.list_object_versions(**request)
            markers = {m["VersionId"] for m in page.get("DeleteMarkers", [])}
            found = page.get("IsTruncated") and page.get("NextVersionIdMarker") in markers
            if not page.get("IsTruncated"):
                break
            request.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])
        if found:
            return size
    raise AssertionError("no page size from 37 to 79 puts a delete marker on a page edge")


def identities(records) -> list[tuple[str, str]]:
    """(key, version id) of each record, in key order; within a key as a set: moto stamps whole seconds and
    writes a page's versions before its delete markers, so same-second ties order by page size."""
    found = [(r.key, r.version_id) for r in records]
    assert [key for key, _ in found] == sorted(key for key, _ in found)
    assert len(set(found)) == len(found)  # each version exactly once
    return sorted(found)


def current(records) -> dict[str, str]:
    """key -> version id of the current versions (the source's IsLatest) at the listing's time."""
    return {r.key: r.version_id for r in records if r.latest and not r.deleted}


def assert_state_matches(repo, policy, client, bucket: str, records, at: float, expected: dict[str, str]) -> int:
    """The state at ``at`` computed from the manifests is ``expected``, content included."""
    got = {r.key: r for r in state_at(records, at)}
    assert {k: r.version_id for k, r in got.items()} == expected
    for key, record in got.items():
        body = b"".join(open_content(repo, policy, record))
        assert body == client.get_object(Bucket=bucket, Key=key, VersionId=record.version_id)["Body"].read()
    return len(got)


def test_thousands_of_versions_paged_incremental_and_stored_once(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"hist-{time.time_ns()}")
    write_history(client, bucket, keys=300, rounds=9)
    page = page_size_with_markers_on_edges(client, bucket)
    policy = load_policy(str(bucket_policy(tmp_path, s3_server.endpoint_url, [bucket], workers=8)))
    init_repo(policy)

    first = run_backup_s3(policy, page_size=page)
    listed = source_records(client, bucket)
    assert first.buckets[bucket].records == first.buckets[bucket].new == len(listed) >= 2500
    assert sum(r.deleted for r in listed) > 300
    with open_repo(policy) as repo:
        merged = list(mirror_records(repo, "items", bucket))
        assert identities(merged) == identities(listed)
        shas = {r.sha256 for r in merged if not r.deleted}
        stored = [info.key for info in repo.store.list(layout.CONTENT)]
        assert sorted(stored) == sorted(layout.content_object(sha) for sha in shas)  # each content once
        assert len(shas) < len([r for r in merged if not r.deleted])
        assert assert_state_matches(repo, policy, client, bucket, merged, time.time(), current(listed)) > 100

    time.sleep(1.1)  # the next writes in later seconds than the first run's instant
    middle = time.time()
    # a run's instant is the server's second before its listing began, whole: keep the second run's clear
    # of ``middle`` even when the writes below take no time
    time.sleep(2.5)
    more = write_history(client, bucket, keys=40, rounds=2, start_round=9)
    second = run_backup_s3(policy, page_size=page)
    assert second.parent == first.backup_id
    assert second.buckets[bucket].new == more == len(source_records(client, bucket)) - len(listed)
    assert second.buckets[bucket].records == len(listed) + more
    with open_repo(policy) as repo:
        merged = list(mirror_records(repo, "items", bucket))
        now_listed = source_records(client, bucket)
        assert identities(merged) == identities(now_listed)
        assert_state_matches(repo, policy, client, bucket, merged, middle, current(listed))
        assert_state_matches(repo, policy, client, bucket, merged, time.time(), current(now_listed))
        upto_first = list(mirror_records(repo, "items", bucket, upto=middle))
        assert identities(upto_first) == identities(listed)


def test_cli_run_json_list_info_and_verify(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"cli-{time.time_ns()}")
    write_history(client, bucket, keys=20, rounds=3)
    client.put_object(Bucket=bucket, Key="big.bin", Body=BIG)  # above INLINE_MAX: hashed, then streamed
    count = len(source_records(client, bucket))
    policy_file = bucket_policy(tmp_path, s3_server.endpoint_url, [bucket])
    hadr_cli(policy_file, "init", check=True)
    result = assert_schema("backup-s3", hadr_cli(policy_file, "--json", "backup", "s3", check=True).stdout)
    assert result["mode"] == "repository" and result["parent"] is None
    assert result["buckets"][bucket]["new"] == count
    again = assert_schema("backup-s3", hadr_cli(policy_file, "--json", "backup", "s3", check=True).stdout)
    assert again["parent"] == result["backup_id"] and again["buckets"][bucket]["new"] == 0
    human = hadr_cli(policy_file, "backup", "s3", check=True).stdout
    assert "incremental on" in human and bucket in human
    listing = assert_schema("list", hadr_cli(policy_file, "--json", "list", check=True).stdout)
    assert [b["meta"]["buckets"][bucket]["new"] for b in listing["backups"]] == [count, 0, 0]
    info = assert_schema("info", hadr_cli(policy_file, "--json", "info", check=True).stdout)
    (source,) = info["sources"]
    assert source["restorable_window"][0]["kind"] == "s3-runs"
    assert source["archive"]["buckets"][0]["versioning"] == "enabled"
    assert source["archive"]["buckets"][0]["window"] == "unbounded"
    with open_repo(load_policy(str(policy_file))) as repo:
        (big,) = [r for r in mirror_records(repo, "items", bucket) if r.key == "big.bin"]
        assert big.sha256 == hashlib.sha256(BIG).hexdigest()
        assert b"".join(open_content(repo, load_policy(str(policy_file)), big)) == BIG
    verified = assert_schema("verify-repo", hadr_cli(policy_file, "--json", "verify", "repo", "--deep").stdout)
    assert verified["passed"] and verified["checked"]["s3_manifests"] == 3
    assert verified["checked"]["s3_records"] == count
    assert verified["checked"]["needed_objects"] == 2  # each later run needs its parent's manifest
    with open_repo(load_policy(str(policy_file))) as repo:
        first_run, second_run, _third = repo.catalog.select(kind="s3")
        needs = engines.engine("s3").needs(second_run)
        assert needs.stream_keys == (layout.s3_manifest("items", first_run.id, bucket),)
        assert layout.s3_manifest("items", second_run.id, bucket) in needs.objects
        assert referenced_content(repo, [first_run]) == {
            r.content.key for r in mirror_records(repo, "items", bucket) if r.content is not None
        }
    checked = hadr_cli(policy_file, "--json", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    findings = {(f["code"], f["subject"]): f["level"] for f in assert_schema("check", checked.stdout)["findings"]}
    assert findings[("bucket-listable", bucket)] == findings[("versioning-on", bucket)] == "ok"
    listed = hadr_cli(policy_file, "list", check=True).stdout
    assert f"{count} records" in listed and "repository" in listed


@pytest.fixture
def authenticating_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A moto server that checks credentials after its first 40 requests (``authenticate_from_now``)."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "40")
    with another_s3(tmp_path / "moto-auth") as server:
        yield server


def authenticate_from_now(client) -> None:
    """Spend the server's unauthenticated requests: from now on it checks credentials."""
    from botocore.exceptions import ClientError

    for _ in range(40):
        try:
            client.list_buckets()
        except ClientError as error:
            assert error.response["Error"]["Code"] == "InvalidAccessKeyId"
            return
    raise AssertionError("the server never began to check credentials")


def assert_refused(policy_file: Path, repo_dir: Path, expected: str) -> None:
    """``hadr backup s3`` exits 2 with ``expected`` on stderr, and the catalog stays as it was."""
    catalog = (repo_dir / layout.CATALOG).read_bytes()
    done = hadr_cli(policy_file, "backup", "s3")
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr and done.stdout == ""
    assert (repo_dir / layout.CATALOG).read_bytes() == catalog
    assert not list(repo_dir.glob("backups/**/*.jsonl")) and not (repo_dir / "content").exists()


@pytest.mark.parametrize("case", ["missing bucket", "invalid bucket name"])
def test_bad_bucket_exits_2_and_leaves_the_catalog_alone(s3_server, tmp_path: Path, case: str) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"bad-{time.time_ns()}")
    client.put_object(Bucket=bucket, Key="k", Body=b"v")
    hadr_cli(bucket_policy(tmp_path, s3_server.endpoint_url, [bucket]), "init", check=True)
    name, expected = {
        "missing bucket": ("no-such-bucket-here", "bucket no-such-bucket-here does not exist"),
        "invalid bucket name": ("Not_A_Bucket", "'Not_A_Bucket' is not a valid bucket name"),
    }[case]
    assert_refused(bucket_policy(tmp_path, s3_server.endpoint_url, [bucket, name]), tmp_path / "repo", expected)


def test_an_endpoint_that_does_not_answer_or_an_unknown_source_exit_2(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"ep-{time.time_ns()}")
    hadr_cli(bucket_policy(tmp_path, s3_server.endpoint_url, [bucket]), "init", check=True)
    closed = f"http://127.0.0.1:{free_port()}"
    assert_refused(
        bucket_policy(tmp_path, closed, [bucket]), tmp_path / "repo", f"cannot reach the S3 endpoint {closed}"
    )
    unknown = hadr_cli(bucket_policy(tmp_path, s3_server.endpoint_url, [bucket]), "backup", "s3", "--source", "nope")
    assert unknown.returncode == 2 and "no sources.buckets entry named 'nope'" in unknown.stderr


def test_bad_credentials_exit_2_and_leave_the_catalog_alone(authenticating_s3: S3Server, tmp_path: Path) -> None:
    client = authenticating_s3.client()
    bucket = versioned_bucket(client, "guarded")
    client.put_object(Bucket=bucket, Key="k", Body=b"v")
    authenticate_from_now(client)
    hadr_cli(bucket_policy(tmp_path, authenticating_s3.endpoint_url, [bucket]), "init", check=True)
    bad = bucket_policy(tmp_path, authenticating_s3.endpoint_url, [bucket], access_key="wrong", secret_key="wrong")
    assert_refused(bad, tmp_path / "repo", "was denied (InvalidAccessKeyId)")


def test_current_versions_only(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = versioned_bucket(client, f"cur-{time.time_ns()}")
    write_history(client, bucket, keys=12, rounds=4)
    policy = load_policy(str(bucket_policy(tmp_path, s3_server.endpoint_url, [bucket], versions="current")))
    init_repo(policy)
    run = run_backup_s3(policy)
    latest = [r for r in source_records(client, bucket) if r.latest]
    assert run.buckets[bucket].new == len(latest) == 12
    with open_repo(policy) as repo:
        merged = list(mirror_records(repo, "items", bucket))
        assert identities(merged) == identities(latest)
        assert all(r.latest for r in merged)
        for record in state_at(merged, time.time()):
            body = b"".join(open_content(repo, policy, record))
            assert hashlib.sha256(body).hexdigest() == record.sha256
    assert json.loads(json.dumps(run.to_json()))["buckets"][bucket]["new"] == 12


def test_content_damaged_on_the_way_fails_the_run_with_exit_code_3(
    s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes hadr hashes differ from what the bucket's ETag says (a damaged read): the run fails, loudly."""
    from hadr_backup.errors import SourceChecksumMismatch
    from hadr_backup.objectstore.copy import ReadCheck

    client = s3_server.client()
    bucket = versioned_bucket(client, f"dmg-{time.time_ns()}")
    write_history(client, bucket, keys=10, rounds=1)
    policy = load_policy(str(bucket_policy(tmp_path, s3_server.endpoint_url, [bucket])))
    init_repo(policy)
    update = ReadCheck.update

    def damaged(self, chunk: bytes) -> None:
        flipped = chunk[:-1] + bytes([chunk[-1] ^ 1]) if self.record.key == "items/00005.bin" else chunk
        update(self, flipped)

    monkeypatch.setattr(ReadCheck, "update", damaged)
    with pytest.raises(SourceChecksumMismatch, match="items/00005.bin.*MD5") as caught:
        run_backup_s3(policy)
    assert caught.value.exit_code == 3
    with open_repo(policy) as repo:
        (run,) = repo.catalog.entries
        assert run.state == "failed" and "items/00005.bin" in run.error
        assert list(mirror_records(repo, "items", bucket)) == []
