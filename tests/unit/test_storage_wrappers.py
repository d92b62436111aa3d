"""Retry wrapper logic (pure: a fake inner storage that fails on demand)."""

from __future__ import annotations

import pytest

from hadr_backup.errors import ObjectMissing, TransientStorageError
from hadr_backup.repo.storage import Features, ObjectInfo, RetryingStorage


class Flaky:
    features = Features(atomic_create=True, durable_put=True)

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0
        self.data: dict[str, bytes] = {}

    def _maybe_fail(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientStorageError("503 SlowDown")

    def put(self, key, chunks, *, if_absent=False):
        self._maybe_fail()
        self.data[key] = b"".join(chunks)
        return len(self.data[key])

    def get(self, key):
        self._maybe_fail()
        if key not in self.data:
            raise ObjectMissing(key)
        return iter([self.data[key]])

    def stat(self, key):
        self._maybe_fail()
        return ObjectInfo(key, len(self.data[key]), 0) if key in self.data else None

    def list(self, prefix=""):
        self._maybe_fail()
        return iter([ObjectInfo(k, len(v), 0) for k, v in sorted(self.data.items())])

    def delete(self, key):
        self._maybe_fail()
        self.data.pop(key, None)

    def describe(self):
        return "flaky"


def test_retries_transient_errors_then_succeeds():
    inner = Flaky(failures=3)
    store = RetryingStorage(inner, attempts=5, sleep=lambda s: None)
    assert store.put("k", b"abc") == 3
    assert inner.calls == 4
    assert b"".join(store.get("k")) == b"abc"


def test_gives_up_after_attempts():
    inner = Flaky(failures=10)
    delays = []
    store = RetryingStorage(inner, attempts=4, base_delay=0.5, sleep=delays.append)
    with pytest.raises(TransientStorageError):
        store.stat("k")
    assert inner.calls == 4
    assert delays == [0.5, 1.0, 2.0]


def test_missing_object_is_not_retried():
    inner = Flaky(failures=0)
    store = RetryingStorage(inner, sleep=lambda s: None)
    with pytest.raises(ObjectMissing):
        store.get("absent")
    assert inner.calls == 1


def test_one_shot_stream_is_not_replayed():
    inner = Flaky(failures=1)
    store = RetryingStorage(inner, sleep=lambda s: None)
    with pytest.raises(TransientStorageError):
        store.put("k", (c for c in [b"a", b"b"]))
    assert inner.calls == 1 and "k" not in inner.data
