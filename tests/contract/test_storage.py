"""One contract suite that every storage driver passes (local filesystem, S3 over HTTP via moto)."""

from __future__ import annotations

import os
import shutil
import threading
import time
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
        yield data[i : i + size]


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


def test_list_and_stat_tell_the_same_size_and_time(store):
    before = time.time()
    store.put("t/a", [b"12345"])
    listed, stat = next(store.list("t/")), store.stat("t/a")
    assert (listed.key, listed.size) == (stat.key, stat.size) == ("t/a", 5)
    assert abs(listed.mtime - stat.mtime) < 1.0  # S3: an ISO 8601 time in the listing, an HTTP date on HEAD
    assert before - 2 <= listed.mtime <= time.time() + 2  # UTC read as UTC: no zone offset slipped in


# keys whose characters sort before and after '/' ('+', ',', '-', '.' before; '0', ':', '=', '@', 'X', '_'
# after), at several depths: a walk that sorted a folder as its bare name would put "m/x/a" before "m/x-1"
MIXED_KEYS = [
    "m/x-1",
    "m/x.1",
    "m/x/a",
    "m/x/a-b",
    "m/x/a.b",
    "m/x/a:b",
    "m/x/a+/c",
    "m/x/,",
    "m/x,/d",
    "m/x+1/e",
    "m/x-/f",
    "m/x.y/z",
    "m/x0",
    "m/x:",
    "m/x=",
    "m/x@",
    "m/x_",
    "m/X",
    "m/w",
    "m/-x",
    "m/x-1.d/g/h",
    "m/x-1.d/g-h",
    "m/x-1.d/g.h",
]


def test_list_is_in_the_order_of_sorted_keys(store):
    for key in reversed(MIXED_KEYS):
        store.put(key, [key.encode()])
    for prefix in ("", "m/", "m/x", "m/x/", "m/x-", "m/x-1", "m/x/a"):
        expected = sorted(k for k in MIXED_KEYS if k.startswith(prefix))
        assert expected and [i.key for i in store.list(prefix)] == expected, prefix


def small_pages(store, size: int) -> list[str]:
    """Make an S3 store list ``size`` keys a request; the returned list grows by one per page asked for
    (a local store has no pages: it stays empty)."""
    client = getattr(getattr(store, "inner", store), "client", None)
    pages: list[str] = []
    if client is not None:
        client.meta.events.register(
            "before-parameter-build.s3.ListObjectsV2", lambda params, **kwargs: params.__setitem__("MaxKeys", size)
        )
        client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kwargs: pages.append("page"))
    return pages


def test_a_listing_of_many_pages_streams_complete_and_in_key_order(store):
    keys = [f"wal/s/{folder:016X}/{n:024X}-{'ab'[n % 2] * 64}" for folder in (1, 2) for n in range(23)]
    keys += ["wal/s/0000000000000001-x", "wal/s/archive.json"]
    for key in reversed(keys):
        store.put(key, [b"x"])
    pages = small_pages(store, 4)
    listing = store.list("wal/s/")
    opened = len(pages)
    assert [i.key for i in listing] == sorted(keys)
    if store.features.local_path:
        assert pages == []
    else:  # the first page before list() returned, the rest while the listing was consumed: 12 in all
        assert (opened, len(pages)) == (1, 12)


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


@pytest.mark.parametrize("key", ["/abs", "a/../b", "..", "a//b", "a/./b", "", "a\\b", ".hidden", "a/.tmp", "sp ace"])
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
