"""One contract suite that every storage driver passes (local filesystem, S3 over HTTP via moto)."""

from __future__ import annotations

import os
import shutil
import threading
import uuid

import pytest

from hadr_backup.errors import BadKey, ObjectExists, ObjectMissing, RepositoryError, StorageUnreadable
from hadr_backup.repo.local import LocalStorage
from hadr_backup.repo.s3 import PART_SIZE, S3Storage
from hadr_backup.repo.storage import ReadOnlyStorage, RetryingStorage, read_all


@pytest.fixture(params=["local", "s3", "s3-retrying"])
def driver(request, tmp_path):
    """(store, vanish): ``vanish()`` takes the storage's root away (the directory, the bucket)."""
    if request.param == "local":
        root = tmp_path / "repo"
        return LocalStorage(root, create=True), lambda: shutil.rmtree(root)
    server = request.getfixturevalue("s3_server")
    client = server.client()
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    inner = S3Storage(bucket, "some/prefix", client=client, endpoint=server.endpoint_url)

    def vanish():
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)

    return (RetryingStorage(inner, sleep=lambda s: None) if request.param == "s3-retrying" else inner), vanish


@pytest.fixture
def store(driver):
    return driver[0]


def chunks_of(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_put_get_roundtrip_small_and_empty(store):
    assert store.put("a/b/small", [b"hello ", b"world"]) == 11
    assert read_all(store, "a/b/small") == b"hello world"
    assert store.put("a/empty", iter(())) == 0
    assert read_all(store, "a/empty") == b""


def test_put_streams_large_object_in_parts(store):
    data = os.urandom(PART_SIZE + 12345)  # crosses the multipart threshold on S3
    assert store.put("big/object", chunks_of(data)) == len(data)
    assert read_all(store, "big/object") == data
    assert store.stat("big/object").size == len(data)


def test_put_replaces_whole_object(store):
    store.put("k", [b"first version, longer"])
    store.put("k", [b"second"])
    assert read_all(store, "k") == b"second"


def test_get_missing_raises_object_missing(store):
    with pytest.raises(ObjectMissing, match="nope"):
        read_all(store, "nope/missing")


def test_stat(store):
    assert store.stat("x/y") is None
    store.put("x/y", [b"12345"])
    info = store.stat("x/y")
    assert (info.key, info.size) == ("x/y", 5)
    assert info.mtime > 0


def test_list_by_prefix_is_sorted_and_exact(store):
    for key in ["wal/b/2", "wal/a/1", "wal/a/0", "walrus", "other/1"]:
        store.put(key, [key.encode()])
    assert [i.key for i in store.list("wal/")] == ["wal/a/0", "wal/a/1", "wal/b/2"]
    assert [i.key for i in store.list("wal")] == ["wal/a/0", "wal/a/1", "wal/b/2", "walrus"]
    assert [i.key for i in store.list("wal/a/")] == ["wal/a/0", "wal/a/1"]
    assert [i.key for i in store.list("none/")] == []
    assert {i.key for i in store.list()} == {"wal/b/2", "wal/a/1", "wal/a/0", "walrus", "other/1"}
    assert [i.size for i in store.list("other/")] == [len(b"other/1")]


def test_delete_is_idempotent(store):
    store.put("d/1", [b"x"])
    store.delete("d/1")
    assert store.stat("d/1") is None
    store.delete("d/1")  # again: not an error


def test_if_absent_refuses_existing_and_keeps_it(store):
    store.put("c/1", [b"original"], if_absent=True)
    with pytest.raises(ObjectExists):
        store.put("c/1", [b"other"], if_absent=True)
    assert read_all(store, "c/1") == b"original"


def test_if_absent_is_atomic_under_concurrency(store):
    winners, losers = [], []

    def attempt(n):
        try:
            store.put("race/key", [f"writer {n}".encode()], if_absent=True)
            winners.append(n)
        except ObjectExists:
            losers.append(n)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert read_all(store, "race/key") == f"writer {winners[0]}".encode()


def test_failed_put_leaves_nothing(store):
    def broken():
        yield os.urandom(PART_SIZE + 1)  # past the first part on S3
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        store.put("half/written", broken())
    assert store.stat("half/written") is None
    assert [i.key for i in store.list("half/")] == []


def test_failed_put_keeps_previous_version(store):
    store.put("keep/me", [b"good"])

    def broken():
        yield b"partial"
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        store.put("keep/me", broken())
    assert read_all(store, "keep/me") == b"good"


@pytest.mark.parametrize("key", ["/abs", "a/../b", "..", "a//b", "a/./b", "", "a\\b", ".hidden", "a/.tmp",
                                 "sp ace"])
def test_bad_keys_are_refused(store, key):
    with pytest.raises(BadKey):
        store.put(key, [b"x"])
    with pytest.raises(BadKey):
        store.stat(key)


def test_read_only_wrapper_refuses_writes(store):
    store.put("ro/1", [b"data"])
    ro = ReadOnlyStorage(store)
    with pytest.raises(RepositoryError, match="read-only"):
        ro.put("ro/2", [b"x"])
    with pytest.raises(RepositoryError, match="read-only"):
        ro.delete("ro/1")
    assert read_all(ro, "ro/1") == b"data"
    assert [i.key for i in ro.list("ro/")] == ["ro/1"]


def test_features_are_declared(store):
    assert store.features.atomic_create is True
    assert store.features.durable_put is True


def test_a_vanished_root_is_never_an_empty_listing(driver):
    store, vanish = driver
    store.put("wal/main/0000000100000000/000000010000000000000001-x", [b"segment"])
    store.put("hadr.repo.json", [b"{}"])
    vanish()
    for prefix in ("wal/main/0000000100000000/000000010000000000000002", "wal/", ""):
        with pytest.raises(StorageUnreadable):
            store.list(prefix)
    with pytest.raises(RepositoryError) as failed:
        store.stat("hadr.repo.json")
    assert not isinstance(failed.value, ObjectMissing)
