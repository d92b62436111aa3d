"""The repository lock: one writer at a time, wherever it runs, with a clear error naming the holder.

Two kinds, one holder record (token, host, pid, command, since, renewed, ttl):

* ``RepoLock`` (local and NFS repositories): an ``flock`` on ``<repository>/.lock``, which the kernel
  releases when its holder dies, so a lock left by a killed process is stale by construction.
* ``LeaseLock`` (S3 repositories): a lease object ``locks/repository.json`` in the repository itself,
  created with a conditional write (If-None-Match), renewed by its holder (If-Match on the version it
  wrote) while held, and taken over by another writer only once it has expired (or its holder, on this
  same host, is gone), again with a conditional write, so two writers never both win. A holder whose
  renewal fails has lost the lease (``lost``): its next catalog change is refused.

Both wait up to ``wait`` seconds for a holder to finish before giving up with LockHeld.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hadr_backup.errors import LockHeld, LockLost, ObjectChanged, ObjectMissing
from hadr_backup.procs import pid_alive

CLOCK_MARGIN = 5.0  # seconds of clock difference between hosts tolerated before a lease counts as expired
POLL = 0.5


def holder_record(ttl: float, now: float, token: str, since: float | None = None) -> dict:
    return {
        "token": token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(["hadr", *sys.argv[1:]])[:200],
        "since": since or now,
        "renewed": now,
        "ttl": ttl,
    }


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command')}) since {since} UTC"


def _held_error(holder: dict) -> LockHeld:
    return LockHeld(
        f"the repository is locked by {describe_holder(holder)}",
        hint="wait for that run to finish (or raise repository.lock_wait); the lock frees itself when its holder exits",
    )


def _gone_here(holder: dict) -> bool:
    """True when the holder ran on this host and its process no longer exists."""
    return holder.get("host") == socket.gethostname() and bool(holder.get("pid")) and not pid_alive(int(holder["pid"]))


@dataclass
class RepoLock:
    """flock on a local file: the lock of a local (or NFS) repository."""

    path: Path
    wait: float = 0.0
    previous_holder: dict | None = None  # set when a stale lock of a dead process was taken over
    lost: bool = False  # as LeaseLock's: an flock is never lost while the process lives
    _fd: int | None = None

    def acquire(self) -> RepoLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        folder = os.stat(self.path.parent)
        if os.geteuid() == 0 and folder.st_uid != 0:  # as the repository's other files: its owner's
            os.fchown(fd, folder.st_uid, folder.st_gid)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise _held_error(holder) from None
                time.sleep(POLL)
        holder = _read_holder(fd)
        if holder.get("pid"):
            self.previous_holder = holder  # a clean release empties the record: its holder died
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_record(0, time.time(), secrets.token_hex(8))).encode(), 0)
        self._fd = fd
        return self

    def renew(self) -> None:
        """Nothing to renew: the kernel holds an flock for as long as the process lives."""

    def check(self) -> None:
        """An flock cannot be taken away from a live process."""

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RepoLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


@dataclass
class LeaseLock:
    """A lease object in the repository: the lock of an S3 repository, shared by every host."""

    store: object  # Storage (put_if / get_versioned / delete_if)
    key: str
    ttl: float = 60.0
    wait: float = 0.0
    clock: Callable[[], float] = time.time
    previous_holder: dict | None = None
    lost: bool = False
    _version: str | None = None
    _record: dict = field(default_factory=dict)
    _renewed: float = 0.0  # time.monotonic() of the last write that proved the lease ours

    def acquire(self) -> LeaseLock:
        deadline = time.monotonic() + self.wait
        self._record = holder_record(self.ttl, self.clock(), secrets.token_hex(8))
        while True:
            holder = self._try_take()
            if holder is None:
                return self
            if time.monotonic() >= deadline:
                raise _held_error(holder)
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())) or POLL)

    def _try_take(self) -> dict | None:
        """Create the lease, or take over an expired one; return the live holder when neither works."""
        try:
            self._version = self.store.put_if(self.key, self._body(), token=None)
            self._renewed = time.monotonic()
            return None
        except ObjectChanged:
            pass
        try:
            current = self.store.get_versioned(self.key)
        except ObjectMissing:
            return {}  # released meanwhile: try again at once
        holder = _parse(current.data)
        if not self.expired(holder):
            return holder
        try:
            self._version = self.store.put_if(self.key, self._body(), token=current.token)
        except ObjectChanged:
            return {}  # someone else took it over first: look again
        self._renewed = time.monotonic()
        self.previous_holder = holder
        return None

    def expired(self, holder: dict) -> bool:
        if not holder:
            return True  # unreadable: no live holder wrote it
        renewed, ttl = float(holder.get("renewed", 0)), float(holder.get("ttl", self.ttl))
        return self.clock() > renewed + ttl + CLOCK_MARGIN or _gone_here(holder)

    def renew(self) -> None:
        """Extend the lease; when it was taken over meanwhile, mark it lost."""
        if self._version is None or self.lost:
            return
        self._record["renewed"] = self.clock()
        try:
            self._version = self.store.put_if(self.key, self._body(), token=self._version)
        except ObjectChanged:
            self.lost = True
            return
        self._renewed = time.monotonic()

    def check(self) -> None:
        """Raise LockLost unless the lease is still ours; a lease not proven for half its TTL (this
        process was frozen, or its renewals stalled) is renewed first, which proves or loses it."""
        if not self.lost and time.monotonic() - self._renewed > self.ttl / 2:
            self.renew()
        if self.lost:
            raise LockLost(
                f"the repository lease {self.key} was taken over by another writer while this "
                f"process held it (renewals did not get through for {self.ttl:g} s)",
                hint="nothing more is written by this run; run it again",
            )

    def release(self) -> None:
        if self._version is None:
            return
        try:
            self.store.delete_if(self.key, self._version)
        except (ObjectChanged, ObjectMissing):
            pass  # taken over: it is not ours to remove
        self._version = None

    def _body(self) -> bytes:
        return json.dumps(self._record, sort_keys=True).encode()


def _parse(data: bytes) -> dict:
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}
