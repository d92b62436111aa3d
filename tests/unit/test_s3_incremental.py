"""What a run copies (the merge-join of a listing with earlier manifests), the bounded copy pool, manifest
lines and the content checks of what is read — without a server."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import pytest

from hadr_backup.errors import SourceChecksumMismatch
from hadr_backup.objectstore.copy import ReadCheck
from hadr_backup.objectstore.incremental import ordered_pool, unseen
from hadr_backup.objectstore.manifest import Content, MirroredRecord, manifest_lines
from hadr_backup.objectstore.protect import merged_rules
from hadr_backup.objectstore.versions import VersionRecord


def rec(key: str, vid: str, at: float, deleted: bool = False, latest: bool = False) -> VersionRecord:
    return VersionRecord(key, vid, at, deleted=deleted, size=0 if deleted else 3, etag=None, latest=latest)


def test_unseen_yields_only_records_no_earlier_run_listed_key_by_key():
    listing = [
        rec("a", "a3", 30, latest=True),
        rec("a", "a2", 20),
        rec("a", "a1", 10),
        rec("b", "b1", 10, deleted=True, latest=True),
        rec("c", "c2", 25, latest=True),
        rec("c", "c1", 12),
        rec("e", "e1", 40, latest=True),
    ]
    seen = [
        rec("a", "a2", 20),
        rec("a", "a1", 10),
        rec("b", "b1", 10, deleted=True),
        rec("c", "c1", 12),
        rec("d", "d1", 5),
    ]
    assert [r.version_id for r in unseen(iter(listing), iter(seen))] == ["a3", "c2", "e1"]
    assert [r.version_id for r in unseen(iter(listing), iter([]))] == [r.version_id for r in listing]
    assert [r.version_id for r in unseen(iter(listing), iter(seen), current_only=True)] == ["a3", "c2", "e1"]
    assert [r.version_id for r in unseen(iter(listing), iter([]), current_only=True)] == ["a3", "b1", "c2", "e1"]


def test_unseen_tells_null_versions_apart_by_etag_and_time():
    """A bucket that never had versioning lists every overwrite as version "null"."""
    before = VersionRecord("k", "null", 10, size=3, etag="e1", latest=True)
    after = VersionRecord("k", "null", 20, size=3, etag="e2", latest=True)
    assert list(unseen([after], [before])) == [after]
    assert list(unseen([before], [before])) == []


def test_ordered_pool_keeps_order_and_bounds_what_is_in_flight():
    taken, yielded, most = 0, 0, 0
    lock = threading.Lock()

    def items():
        nonlocal taken, most
        for index in range(500):
            with lock:
                taken += 1
                most = max(most, taken - yielded)
            yield index

    def work(index: int) -> int:
        time.sleep(0.0005 * (index % 7))  # finish out of order
        return index * 2

    results = []
    for result in ordered_pool(items(), work, workers=4, window=8, inline=lambda i: i % 10 == 0):
        results.append(result)
        yielded += 1
    assert results == [i * 2 for i in range(500)]
    assert most <= 8  # memory: never more than the window taken and not yet handed on


def test_ordered_pool_raises_the_first_failure_in_order():
    def work(index: int) -> int:
        if index == 5:
            raise ValueError("five")
        return index

    seen = []
    with pytest.raises(ValueError, match="five"):
        for result in ordered_pool(range(100), work, workers=3, window=6):
            seen.append(result)
    assert seen == [0, 1, 2, 3, 4]


def test_manifest_lines_round_trip_with_content():
    records = [
        MirroredRecord(
            "a",
            "v1",
            10.0,
            size=3,
            etag="x",
            sha256="ab" * 32,
            content=Content("repository", "content/ab/" + "ab" * 32, 50),
        ),
        MirroredRecord("a", "v0", 9.0, deleted=True),
        MirroredRecord(
            "b", "v2", 11.5, size=1, sha256="cd" * 32, content=Content("mirror", "p/bk/b", bucket="m", version_id="mv")
        ),
    ]
    lines = b"".join(manifest_lines(records)).decode().splitlines()
    import json

    assert [MirroredRecord.from_json(json.loads(line)) for line in lines] == records
    assert "content" not in json.loads(lines[1]) and json.loads(lines[2])["content"]["version_id"] == "mv"


def check_of(data: bytes, **response) -> ReadCheck:
    record = VersionRecord("k", "v", 1.0, size=len(data), etag=response.get("ETag", "").strip('"'))
    check = ReadCheck("s3://b/k", record, response)
    check.update(data)
    return check


def test_read_check_compares_md5_etag_and_checksum_headers():
    data = b"hello"
    md5 = hashlib.md5(data).hexdigest()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert check_of(data, ETag=f'"{md5}"', ChecksumSHA256=sha).finish() == hashlib.sha256(data).hexdigest()
    assert check_of(data, ETag='"0123456789abcdef0123456789abcdef-2"').finish()  # multipart: no MD5 to compare
    assert check_of(data, ETag='"0123456789abcdef0123456789abcdef"', ServerSideEncryption="aws:kms").finish()
    with pytest.raises(SourceChecksumMismatch, match="ETag"):
        check_of(data, ETag='"0123456789abcdef0123456789abcdef"').finish()
    with pytest.raises(SourceChecksumMismatch, match="x-amz-checksum-sha256"):
        check_of(data, ChecksumSHA256=base64.b64encode(b"\0" * 32).decode()).finish()
    with pytest.raises(SourceChecksumMismatch, match="crc32"):
        check_of(data, ChecksumCRC32="AAAAAA==").finish()
    short = ReadCheck("s3://b/k", VersionRecord("k", "v", 1.0, size=9), {})
    short.update(data)
    with pytest.raises(SourceChecksumMismatch, match="5 bytes read, 9 listed") as caught:
        short.finish()
    assert caught.value.exit_code == 3


def test_merged_rules_keep_the_users_rules_and_are_stable():
    user = {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 9}}
    first = merged_rules([user], 30)
    assert first[0] == user and first[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert merged_rules(first, 30) is first  # nothing to change
    changed = merged_rules(first, 10)
    assert changed[0] == user and changed[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 10}
    assert len(changed) == 2
