"""The RDB snapshot over the replication protocol, as ``redis-cli --rdb`` fetches it.

After AUTH the client says it understands the diskless form (``REPLCONF capa eof``) and wants the RDB
only, no replication stream after it (``REPLCONF rdb-only 1``, Redis >= 7; older servers refuse it and
are fine), then sends ``SYNC``. While the server prepares the RDB it sends bare newlines (keep-alives);
then either ``$<len>`` (disk-based: exactly len bytes follow) or ``$EOF:<40-byte mark>`` (diskless: the
stream ends with that mark). The bytes are yielded as they arrive, never held whole, and the stream is
checked as it passes: the RDB magic ``REDIS`` first, the EOF opcode 0xFF before the 8-byte checksum
last, and the announced length or the mark at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hadr_backup.redis.wire import Connection, RedisError

EOF_MARK_SIZE = 40
MAGIC = b"REDIS"
SYNC_HINT = "the user needs +sync and +replconf (see the README's Redis section)"
TRAILER = 9  # the EOF opcode and the CRC64 that follow the last key


class SnapshotFailed(RedisError):
    """The RDB snapshot did not arrive whole."""


@dataclass
class Transfer:
    """What the stream told us, filled in as it passes."""

    form: str = ""  # "disk" ($<len>) or "diskless" ($EOF:<mark>)
    rdb_version: int | None = None
    size: int = 0
    header_at: float | None = None  # this host's clock when the preamble arrived (the fork is done)
    ended: bool = False
    stored: Any = None  # the StoredObject once the repository holds it


def start_sync(conn: Connection) -> None:
    """Announce what this client understands, then ask for the snapshot."""
    try:
        conn.call("REPLCONF", "capa", "eof")
    except RedisError as error:
        raise SnapshotFailed(
            f"Redis at {conn.address} refused the replication protocol: {error.message}", hint=SYNC_HINT
        ) from None
    try:
        conn.call("REPLCONF", "rdb-only", "1")
    except RedisError:
        pass  # Redis < 7 does not know it: the replication stream that follows is never read
    conn.send("SYNC")


def wait_preamble(conn: Connection, transfer: Transfer, on_header: Callable[[], None] | None = None) -> bytes:
    """Wait for the SYNC reply's preamble (the server has forked: ``transfer.header_at`` is the instant
    the snapshot represents), then call ``on_header``; the RDB bytes follow (``rdb_chunks``)."""
    preamble = _preamble(conn)
    transfer.header_at = time.time()
    if on_header is not None:
        on_header()
    return preamble


def rdb_chunks(conn: Connection, transfer: Transfer, preamble: bytes) -> Iterator[bytes]:
    """The RDB bytes after ``preamble`` on ``conn``, checked as they pass; ``transfer`` says what came."""
    checker = _Checker(transfer)
    if preamble.startswith(b"EOF:"):
        transfer.form = "diskless"
        mark = preamble[4:]
        if len(mark) != EOF_MARK_SIZE:
            raise SnapshotFailed(f"malformed diskless preamble from Redis at {conn.address}")
        chunks = _until_mark(conn, mark)
    else:
        transfer.form = "disk"
        chunks = _exactly(conn, int(preamble))
    for chunk in chunks:
        checker.feed(chunk)
        yield chunk
    checker.finish()


def _preamble(conn: Connection) -> bytes:
    while True:
        line = conn.readline()
        if not line:
            continue  # a keep-alive while the server prepares the RDB
        if line.startswith(b"-"):
            raise SnapshotFailed(
                f"Redis at {conn.address} refused SYNC: {line[1:].decode(errors='replace')}",
                hint=SYNC_HINT,
            )
        if line.startswith(b"$"):
            return line[1:]
        raise SnapshotFailed(f"unexpected reply to SYNC from Redis at {conn.address}: {line[:60]!r}")


def _exactly(conn: Connection, size: int) -> Iterator[bytes]:
    left = size
    while left:
        chunk = conn.read_some(min(left, 1 << 20))
        if not chunk:
            raise SnapshotFailed(f"Redis at {conn.address} closed the stream {left} bytes before the end of the RDB")
        left -= len(chunk)
        yield chunk


def _until_mark(conn: Connection, mark: bytes) -> Iterator[bytes]:
    """Everything up to ``mark``; the last 40 bytes are held back until more arrive (they may be it)."""
    held = b""
    while True:
        data = conn.read_some()
        if not data:
            raise SnapshotFailed(f"Redis at {conn.address} closed the diskless stream before its end mark")
        data = held + data
        end = data.find(mark)
        if end >= 0:
            if data[:end]:
                yield data[:end]
            return
        held = data[-EOF_MARK_SIZE:]
        if len(data) > EOF_MARK_SIZE:
            yield data[:-EOF_MARK_SIZE]


class _Checker:
    """The magic and version at the start, the EOF opcode before the checksum at the end."""

    def __init__(self, transfer: Transfer):
        self.transfer = transfer
        self.head = b""
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < 9:
            self.head = (self.head + chunk)[:9]
            if len(self.head) >= len(MAGIC) and not self.head.startswith(MAGIC):
                raise SnapshotFailed(f"the snapshot does not start with the RDB magic: {self.head[:9]!r}")
            if len(self.head) == 9:
                self.transfer.rdb_version = int(self.head[5:9])
        self.tail = (self.tail + chunk)[-TRAILER:]
        self.transfer.size += len(chunk)

    def finish(self) -> None:
        if self.transfer.size < 9 + TRAILER or self.tail[:1] != b"\xff":
            raise SnapshotFailed(f"the snapshot ({self.transfer.size} bytes) does not end with the RDB EOF opcode")
        self.transfer.ended = True
