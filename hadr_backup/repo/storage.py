"""The storage protocol every repository driver satisfies, and the wrappers around it.

Drivers (``local.py``, ``s3.py``) know bytes and keys, nothing of backups. Capabilities are data
(``store.features.atomic_create``), never ``isinstance`` checks. Retry and read-only are wrappers that
satisfy the same protocol. Every driver runs the same contract suite (tests/contract).
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from hadr_backup.errors import BadKey, RepositoryError, TransientStorageError

T = TypeVar("T")
_KEY_PART = re.compile(r"[A-Za-z0-9_\-+=@,:][A-Za-z0-9_.\-+=@,:]*")


@dataclass(frozen=True)
class Features:
    atomic_create: bool  # put(if_absent=True) is atomic against concurrent writers
    durable_put: bool  # put() returns only once the object is durably stored (fsync / confirmed PUT)
    versioning: bool = False  # the backend keeps old versions of overwritten objects
    local_path: bool = False  # objects are files on this machine
    compare_and_swap: bool = True  # put_if/delete_if are atomic against concurrent writers


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float
    temp_id: str | None = None  # for a temporary (interrupted-write) object: what delete_temporary needs


class Versioned(NamedTuple):
    """A small object's bytes and the version token they were read at (for put_if/delete_if)."""

    data: bytes
    token: str


class Storage(Protocol):
    features: Features

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> int:
        """Store ``chunks`` under ``key``, whole or not at all, and return the bytes stored.

        The object is visible to readers only once complete; a failure or a kill leaves either the
        old object or nothing under ``key``. When this returns, the object is durable if
        ``features.durable_put``. With ``if_absent`` an existing object is left alone and
        ObjectExists is raised. ``chunks`` is consumed once.
        """

    def get(self, key: str) -> Iterator[bytes]:
        """Stream the object's bytes. Raises ObjectMissing only when the storage confirmed that there is
        no such object; StorageUnreadable (or TransientStorageError) when it could not tell or read."""

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of the object, or None when the storage confirmed that it does not exist.
        Raises StorageUnreadable (or TransientStorageError) when it could not tell."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (the order of the keys' bytes,
        which is S3's), as a lazy iterator: the driver reads as the caller consumes (S3 page by page,
        a local folder at a time), so memory does not grow with the number of objects listed.

        An empty listing means the storage confirmed that there is none. When the driver cannot look
        (permission, I/O error, a vanished or unmounted root, a refused or failed request, on any
        page or subfolder) it raises StorageUnreadable, or TransientStorageError for a failure that
        may pass on retry: never a shorter listing. A failure before the first object (opening the
        listing) raises from this call itself; a later one raises from the iteration, after the
        objects before it. Callers take "absent" from a listing only, and take a copy
        (``list(...)``) before changing what they are listing.
        """

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error (idempotent)."""

    def describe(self) -> str:
        """Where this storage is, for messages."""

    def get_versioned(self, key: str) -> Versioned:
        """A small object whole, with the version token it was read at. Raises ObjectMissing."""

    def put_if(self, key: str, data: bytes, *, token: str | None) -> str:
        """Compare-and-swap: store ``data`` only if the object's current version token is ``token``
        (None: only if there is no object); return the new token. Otherwise raise ObjectChanged and
        change nothing. Atomic against every other writer of the same storage."""

    def delete_if(self, key: str, token: str) -> None:
        """Remove the object only if its version token is still ``token``; else ObjectChanged."""

    def list_temporary(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Leftovers of writes that never finished (a killed writer's temp file, an incomplete
        multipart upload) for keys under ``prefix``; ``info.key`` is the key being written."""

    def delete_temporary(self, info: ObjectInfo) -> None:
        """Remove one leftover returned by list_temporary (idempotent)."""


def validate_key(key: str) -> str:
    """Refuse keys that could escape the repository or confuse a driver."""
    if not isinstance(key, str) or not key:
        raise BadKey(f"storage key {key!r} is empty")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise BadKey(f"storage key {key!r} must be relative, with '/' separators")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise BadKey(f"storage key {key!r} has an empty, '.' or '..' part")
        if not _KEY_PART.fullmatch(part):
            raise BadKey(
                f"storage key {key!r}: part {part!r} has characters outside [A-Za-z0-9_.-+=@,:] or starts with '.'"
            )
    return key


def validate_prefix(prefix: str) -> str:
    if prefix:
        validate_key(prefix.rstrip("/") or "x")
    return prefix


class ReadOnlyStorage:
    """A storage that refuses writes: verify and restore open the repository through this."""

    def __init__(self, inner: Storage):
        self.inner = inner
        self.features = inner.features

    def put(self, key, chunks, *, if_absent=False):
        raise RepositoryError(f"cannot write {key}: the repository is open read-only")

    def delete(self, key):
        raise RepositoryError(f"cannot delete {key}: the repository is open read-only")

    def get(self, key):
        return self.inner.get(key)

    def stat(self, key):
        return self.inner.stat(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def describe(self):
        return self.inner.describe()

    def get_versioned(self, key):
        return self.inner.get_versioned(key)

    def put_if(self, key, data, *, token):
        raise RepositoryError(f"cannot write {key}: the repository is open read-only")

    def delete_if(self, key, token):
        raise RepositoryError(f"cannot delete {key}: the repository is open read-only")

    def list_temporary(self, prefix=""):
        return self.inner.list_temporary(prefix)

    def delete_temporary(self, info):
        raise RepositoryError(f"cannot delete {info.key}: the repository is open read-only")


@dataclass(frozen=True)
class Backoff:
    """How transient failures are retried: at most ``attempts`` tries; before try n+1 a wait drawn
    between half and all of ``base_delay * 2**(n-1)`` (capped at ``max_delay``), so that clients
    throttled together do not come back together; no new try once ``max_seconds`` would be passed."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_seconds: float | None = None

    def delay(self, retry: int, jitter: float) -> float:
        """The wait before retry number ``retry`` (1, 2, …), with ``jitter`` in [0, 1]."""
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1)) * (0.5 + jitter / 2)


def retry_transient(
    operation: Callable[[], T],
    backoff: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
    on_retry: Callable[[TransientStorageError, float], None] | None = None,
) -> T:
    """Run ``operation``, again after a TransientStorageError, as ``backoff`` allows; the last error is
    raised. Only call it for operations that are safe to repeat. ``on_retry(error, delay)`` sees each
    retry before its wait."""
    started = clock()
    for attempt in range(1, backoff.attempts + 1):
        try:
            return operation()
        except TransientStorageError as error:
            delay = backoff.delay(attempt, jitter())
            out_of_time = backoff.max_seconds is not None and clock() - started + delay > backoff.max_seconds
            if attempt == backoff.attempts or out_of_time:
                raise
            if on_retry is not None:
                on_retry(error, delay)
            sleep(delay)
    raise AssertionError("unreachable")


class RetryingStorage:
    """Retries transient failures with exponential back-off and jitter (``Backoff``).

    stat, delete, and the opening of get and list (until their first chunk or object) are retried;
    a failure later in a stream or a listing passes on to the caller, who has consumed part of it
    (the driver's own per-request retries apply to every page). put is retried only when its data
    can be replayed (bytes or a list); a one-shot stream is handed over once, and the driver's own
    per-part retries apply to it: callers whose source can be read again retry the whole upload
    themselves (wal-push does, within the policy's ``repository.retry``).
    """

    def __init__(
        self,
        inner: Storage,
        *,
        attempts: int = 3,
        base_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ):
        self.inner = inner
        self.features = inner.features
        self.backoff = Backoff(attempts, base_delay)
        self.sleep = sleep
        self.jitter = jitter

    def _retry(self, operation: Callable[[], T]) -> T:
        return retry_transient(operation, self.backoff, sleep=self.sleep, jitter=self.jitter)

    def put(self, key, chunks, *, if_absent=False):
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [bytes(chunks)]
        if isinstance(chunks, list):
            return self._retry(lambda: self.inner.put(key, iter(chunks), if_absent=if_absent))
        return self.inner.put(key, chunks, if_absent=if_absent)

    def get(self, key):
        return self._retry(lambda: started(self.inner.get(key)))

    def stat(self, key):
        return self._retry(lambda: self.inner.stat(key))

    def list(self, prefix=""):
        return self._retry(lambda: started(self.inner.list(prefix)))

    def delete(self, key):
        return self._retry(lambda: self.inner.delete(key))

    def describe(self):
        return self.inner.describe()

    def get_versioned(self, key):
        return self._retry(lambda: self.inner.get_versioned(key))

    def put_if(self, key, data, *, token):
        # a retry after a lost reply can see its own write as a conflict: callers of put_if re-read
        # and re-apply their change, which makes that harmless
        return self._retry(lambda: self.inner.put_if(key, data, token=token))

    def delete_if(self, key, token):
        return self._retry(lambda: self.inner.delete_if(key, token))

    def list_temporary(self, prefix=""):
        return self._retry(lambda: started(self.inner.list_temporary(prefix)))

    def delete_temporary(self, info):
        return self._retry(lambda: self.inner.delete_temporary(info))


def started(items: Iterator[T]) -> Iterator[T]:
    """Pull the first item of a lazy stream or listing now, so that a failure to open it raises from
    this call (inside a retry loop, or from ``Storage.list`` itself); the rest stays lazy."""
    try:
        first = next(items)
    except StopIteration:
        return iter(())
    return itertools.chain((first,), items)


def read_all(store: Storage, key: str) -> bytes:
    return b"".join(store.get(key))
