"""The storage contract, continued: compare-and-swap and the leftovers of interrupted writes, on every
driver (local filesystem, S3 over HTTP via moto, S3 behind the retry wrapper)."""

from __future__ import annotations

import os
import threading

import pytest

from hadr_backup.errors import ObjectChanged, ObjectMissing, RepositoryError
from hadr_backup.repo.storage import ReadOnlyStorage, read_all
from tests.contract.test_storage import driver, store  # noqa: F401  (the parametrised driver fixtures)


def test_put_if_creates_only_when_absent(store):  # noqa: F811
    token = store.put_if("cas/x", b"one", token=None)
    assert read_all(store, "cas/x") == b"one"
    with pytest.raises(ObjectChanged):
        store.put_if("cas/x", b"two", token=None)
    assert store.get_versioned("cas/x") == (b"one", token)


def test_put_if_replaces_only_the_version_it_read(store):  # noqa: F811
    first = store.put_if("cas/y", b"v1", token=None)
    second = store.put_if("cas/y", b"v2", token=first)
    assert second != first
    with pytest.raises(ObjectChanged):
        store.put_if("cas/y", b"stale", token=first)
    assert store.get_versioned("cas/y").data == b"v2"
    with pytest.raises(ObjectChanged):
        store.put_if("cas/missing", b"x", token=second)
    assert store.stat("cas/missing") is None


def test_get_versioned_of_a_missing_object(store):  # noqa: F811
    with pytest.raises(ObjectMissing):
        store.get_versioned("cas/none")


def test_delete_if(store):  # noqa: F811
    token = store.put_if("cas/d", b"x", token=None)
    newer = store.put_if("cas/d", b"y", token=token)
    with pytest.raises(ObjectChanged):
        store.delete_if("cas/d", token)
    assert store.stat("cas/d") is not None
    store.delete_if("cas/d", newer)
    assert store.stat("cas/d") is None


def test_concurrent_compare_and_swap_loses_no_increment(store):  # noqa: F811
    store.put_if("cas/counter", b"0", token=None)
    rounds, threads = 15, 4

    def bump() -> None:
        done = 0
        while done < rounds:
            current = store.get_versioned("cas/counter")
            try:
                store.put_if("cas/counter", str(int(current.data) + 1).encode(), token=current.token)
            except ObjectChanged:
                continue
            done += 1

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert int(read_all(store, "cas/counter")) == rounds * threads


def test_interrupted_put_leaves_a_recognisable_temporary_that_can_be_removed(store):  # noqa: F811
    # what a writer killed with -9 midway leaves: a temp file (local) or an incomplete multipart
    # upload (S3); a Python exception would clean either up, so make them as the killed writer did
    if store.features.local_path:
        folder = store.root / "backups" / "t"
        folder.mkdir(parents=True)
        (folder / f".base.tar.{os.getpid()}.0123abcd.tmp").write_bytes(b"partial")
    else:
        inner = getattr(store, "inner", store)
        upload = inner.client.create_multipart_upload(Bucket=inner.bucket, Key=inner._key("backups/t/base.tar"))
        inner.client.upload_part(
            Bucket=inner.bucket,
            Key=inner._key("backups/t/base.tar"),
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"partial",
        )
    store.put("backups/t/other", [b"whole"])
    leftovers = list(store.list_temporary("backups/"))
    assert [info.key for info in leftovers] == ["backups/t/base.tar"]
    assert [info.key for info in store.list("backups/")] == ["backups/t/other"]
    assert list(store.list_temporary("wal/")) == []
    with pytest.raises(RepositoryError):
        ReadOnlyStorage(store).delete_temporary(leftovers[0])
    store.delete_temporary(leftovers[0])
    store.delete_temporary(leftovers[0])  # idempotent
    assert list(store.list_temporary("")) == []


def test_read_only_storage_refuses_compare_and_swap(store):  # noqa: F811
    token = store.put_if("cas/ro", b"x", token=None)
    read_only = ReadOnlyStorage(store)
    assert read_only.get_versioned("cas/ro").token == token
    with pytest.raises(RepositoryError, match="read-only"):
        read_only.put_if("cas/ro", b"y", token=token)
    with pytest.raises(RepositoryError, match="read-only"):
        read_only.delete_if("cas/ro", token)
