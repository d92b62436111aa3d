"""Retry wrapper logic (pure: a fake inner storage that fails on demand)."""

from __future__ import annotations

import pytest

from hadr_backup.errors import ObjectMissing, RepositoryError, TransientStorageError
from hadr_backup.repo.storage import Backoff, Features, ObjectInfo, RetryingStorage, retry_transient


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
    store = RetryingStorage(inner, attempts=4, base_delay=0.5, sleep=delays.append, jitter=lambda: 1.0)
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


class PagedListing(Flaky):
    """A listing of three objects that fails to open ``failures`` times, then fails after ``good`` objects
    when ``good`` is set (a later page that the driver's own retries could not get)."""

    def __init__(self, failures: int, good: int | None = None):
        super().__init__(failures)
        self.good = good
        self.data = {"a": b"1", "b": b"2", "c": b"3"}

    def list(self, prefix=""):
        self._maybe_fail()  # the first page
        for index, key in enumerate(sorted(self.data)):
            if index == self.good:
                raise TransientStorageError("503 on a later page")
            yield ObjectInfo(key, 1, 0)


def test_the_opening_of_a_listing_is_retried():
    inner = PagedListing(failures=2)
    listing = RetryingStorage(inner, attempts=3, sleep=lambda s: None).list()
    assert inner.calls == 3  # retried before list() returned, while nothing had been handed out
    assert [i.key for i in listing] == ["a", "b", "c"]


def test_a_failure_later_in_a_listing_passes_on_after_what_came_before():
    inner = PagedListing(failures=0, good=2)
    seen = []
    with pytest.raises(TransientStorageError, match="later page"):
        for info in RetryingStorage(inner, attempts=3, sleep=lambda s: None).list():
            seen.append(info.key)
    assert seen == ["a", "b"] and inner.calls == 1  # not retried: the caller has consumed part of it


def test_an_empty_listing_is_an_empty_iterator():
    inner = PagedListing(failures=1)
    inner.data = {}
    assert list(RetryingStorage(inner, attempts=3, sleep=lambda s: None).list()) == []
    assert inner.calls == 2


# -- retry_transient: the backoff shared by the wrapper and wal-push --------------------------------


class Clock:
    """A clock that only the fake sleep moves."""

    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(times: int, error: Exception | None = None):
    calls = []

    def operation():
        calls.append(1)
        if len(calls) <= times:
            raise error or TransientStorageError("503 SlowDown")
        return "done"

    return operation, calls


def test_jitter_keeps_each_delay_between_half_and_all_of_its_cap():
    backoff = Backoff(attempts=10, base_delay=0.5, max_delay=4.0)
    assert [backoff.delay(n, 0.0) for n in range(1, 6)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert [backoff.delay(n, 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    clock = Clock()
    operation, calls = failing(6)
    assert retry_transient(operation, backoff, sleep=clock.sleep, clock=lambda: clock.now) == "done"
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(calls) == 7 and all(cap / 2 <= d <= cap for d, cap in zip(clock.slept, caps, strict=True))
    assert len(set(clock.slept)) > 1  # drawn, not fixed


def test_no_new_try_starts_past_max_seconds():
    clock = Clock()
    operation, calls = failing(100)
    seen = []
    with pytest.raises(TransientStorageError, match="SlowDown"):
        retry_transient(
            operation,
            Backoff(attempts=100, base_delay=1.0, max_delay=4.0, max_seconds=10),
            sleep=clock.sleep,
            clock=lambda: clock.now,
            jitter=lambda: 1.0,
            on_retry=lambda error, delay: seen.append(delay),
        )
    assert clock.slept == [1.0, 2.0, 4.0] and seen == clock.slept  # a fourth wait would end past 10 s
    assert len(calls) == 4 and clock.now <= 10


def test_permanent_errors_are_not_retried():
    clock = Clock()
    operation, calls = failing(1, RepositoryError("access denied (403)"))
    with pytest.raises(RepositoryError, match="403"):
        retry_transient(operation, Backoff(attempts=5), sleep=clock.sleep)
    assert len(calls) == 1 and clock.slept == []


def test_wal_push_retries_the_whole_push_and_reports_the_attempts():
    from hadr_backup.policy.model import RetryConfig
    from hadr_backup.postgres.archive import PushOutcome, push_retrying

    operation, calls = failing(2)
    outcome = push_retrying(
        lambda: operation() and PushOutcome("n", "k", "s", 1, 1, False),
        RetryConfig(attempts=5, max_seconds=30),
        "n",
        "repo",
        sleep=lambda s: None,
    )
    assert outcome.attempts == 3 and len(calls) == 3


def test_wal_push_gives_up_with_the_cause_and_the_bound():
    from hadr_backup.policy.model import RetryConfig
    from hadr_backup.postgres.archive import WalPushFailed, push_retrying

    operation, calls = failing(100)
    with pytest.raises(WalPushFailed) as failed:
        push_retrying(
            operation,
            RetryConfig(attempts=3, max_seconds=30),
            "000000010000000000000007",
            "s3://bucket/hadr",
            sleep=lambda s: None,
        )
    assert len(calls) == 3 and failed.value.exit_code == 1
    message = str(failed.value)
    assert "000000010000000000000007" in message and "s3://bucket/hadr" in message and "SlowDown" in message
    assert "after 3 attempts" in message and "repository.retry" in message
