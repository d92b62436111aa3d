"""The stream pipeline: bytes in, self-describing compressed (and encrypted) chunks out, and back.

Pure: it works on iterables of bytes and knows nothing of storage. Nothing is held whole in memory: at most
``threads * 2`` chunks are in flight, so a stream of any size runs in a few MiB. The stored layout, its
parsing and the object key live in ``streamformat``.

Every chunk is compressed on its own, so chunks are compressed (and decompressed) in parallel; a chunk
that does not shrink is stored as it is.

Failures are specific: a damaged header or chunk → ``TamperedData``; a stream that ends before its final
chunk → ``TruncatedObject``; a chunk in the wrong place → ``ChunkOrderError``; the wrong data key →
``WrongKey``; no key → ``KeyMissing``; and, given ``expected_sha256``, a SHA-256 of the stored bytes that
differs → ``ChecksumMismatch`` (checked last). Each message names the chunk index and the byte offset.
Plaintext is yielded as chunks verify: treat it as provisional until the iterator ends without error.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from hadr_backup.errors import ChecksumMismatch, TamperedData, UsageError
from hadr_backup.repo.keys import SECRET_SIZE, DataKey
from hadr_backup.repo.streamformat import (
    CHUNK_FINAL,
    CHUNK_RAW,
    FRAME_HEADER_SIZE,
    MAGIC,
    MAX_CHUNK_SIZE,
    STREAM_COMPRESSED,
    StreamHeader,
    chunk_aad,
    new_header,
    nonce,
    open_cipher,
    pack_frame,
    read_frames,
    read_header,
)

__all__ = [
    "FRAME_HEADER_SIZE",
    "MAGIC",
    "Codec",
    "Digest",
    "decode",
    "encode",
    "iter_file",
    "open_source",
    "write_stream",
]


@dataclass(frozen=True)
class Codec:
    """How to encode a stream: zstd ``level`` (0 = store uncompressed), worker ``threads`` (1 = inline),
    ``data_key`` (None = not encrypted) and ``chunk_size`` (plaintext bytes per chunk)."""

    level: int = 3
    threads: int = 2
    data_key: DataKey | None = None
    chunk_size: int = 1 << 20

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(f"chunk size {self.chunk_size} is out of range (1 to {MAX_CHUNK_SIZE} bytes)")
        if self.threads < 1:
            raise UsageError(f"threads must be at least 1, not {self.threads}")
        if not -7 <= self.level <= 22:
            raise UsageError(f"zstd level {self.level} is out of range (-7 to 22; 0 stores uncompressed)")
        key = self.data_key
        if key is not None and (len(key.secret) != SECRET_SIZE or not key.id.isascii() or not 0 < len(key.id) < 256):
            raise UsageError(f"data key {key.id!r} is not a {SECRET_SIZE}-byte key with a short ASCII id")


@dataclass
class Digest:
    """What an encoded stream stored; complete once the stream has been fully consumed."""

    raw_size: int = 0
    stored_size: int = 0
    sha256: str = ""  # hex SHA-256 of the stored bytes


# -- encoding -------------------------------------------------------------------------------------


def encode(source: Iterable[bytes] | BinaryIO, codec: Codec) -> tuple[Iterator[bytes], Digest]:
    """Encode ``source`` (an iterable of bytes or a binary file) lazily; ``Digest`` fills in as it is read."""
    digest = Digest()
    return _encode(source, codec, digest), digest


def _encode(source: Iterable[bytes] | BinaryIO, codec: Codec, digest: Digest) -> Iterator[bytes]:
    header, aead = new_header(compressed=bool(codec.level), chunk_size=codec.chunk_size, data_key=codec.data_key)
    sealer = _ChunkSealer(header, codec.level, aead)
    sha = _StreamHash(background=codec.threads > 1)
    try:
        sha.update(header)
        digest.stored_size = len(header)
        yield header
        chunks = _with_final_flag(_source_chunks(source, codec.chunk_size), digest)
        with closing(_ordered_map(sealer, chunks, codec.threads)) as frames:
            for frame in frames:
                sha.update(frame)
                digest.stored_size += len(frame)
                yield frame
        digest.sha256 = sha.hexdigest()
    finally:
        sha.close()


class _ChunkSealer:
    """Turns one plaintext chunk into one frame; called from several worker threads at once."""

    def __init__(self, header: bytes, level: int, aead: Any):
        self._header, self._level, self._aead = header, level, aead
        self._local = threading.local()  # one compressor per thread: they are not thread-safe

    def __call__(self, index: int, chunk: bytes | bytearray | memoryview, final: bool) -> bytes:
        flags = CHUNK_FINAL if final else 0
        payload = self._compress(chunk) if self._level else None
        if payload is None or len(payload) >= len(chunk):
            payload, flags = chunk, flags | CHUNK_RAW
        if self._aead is not None:
            payload = self._aead.encrypt(nonce(index), payload, chunk_aad(self._header, index, flags))
        return pack_frame(index, flags, payload, encrypted=self._aead is not None)

    def _compress(self, chunk: bytes | bytearray | memoryview) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(level=self._level)
        return compressor.compress(chunk)


def _source_chunks(source: Iterable[bytes] | BinaryIO, size: int) -> Iterator[bytes | bytearray | memoryview]:
    if hasattr(source, "read"):  # reads of exactly `size` pass through uncopied; short reads (pipes) are joined
        read = source.read
        return _rechunk(iter(lambda: read(size), b""), size)
    return _rechunk(source, size)


def _rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes | bytearray | memoryview]:
    """Cut pieces of any size into chunks of ``size``, copying only what has to be joined."""
    pending = bytearray()
    for piece in pieces:
        # bytes are immutable, so views of them are safe; anything else may be reused by the caller
        view = memoryview(piece if type(piece) is bytes else bytes(piece))
        if pending:
            needed = size - len(pending)
            pending += view[:needed]
            view = view[needed:]
            if len(pending) < size:
                continue
            yield pending
            pending = bytearray()
        while len(view) >= size:
            yield view[:size]
            view = view[size:]
        pending += view
    if pending:
        yield pending


def _with_final_flag(chunks: Iterator[Any], digest: Digest) -> Iterator[tuple[int, Any, bool]]:
    """(index, chunk, final) for each chunk, holding one back to know which is last."""
    index, held = 0, None
    for chunk in chunks:
        if held is not None:
            yield index, held, False
            index += 1
        digest.raw_size += len(chunk)
        held = chunk
    yield index, (b"" if held is None else held), True


# -- decoding -------------------------------------------------------------------------------------


def decode(
    stored: Iterable[bytes],
    keys: Callable[[str], DataKey] | None,
    *,
    expected_sha256: str | None = None,
    threads: int = 2,
) -> Iterator[bytes]:
    """Yield the plaintext of an encoded stream, verifying every chunk; errors are raised while iterating.

    ``keys(key_id)`` returns the data key named in the header (it may raise ``KeyMissing`` itself).
    """
    sha = _StreamHash(background=threads > 1)
    try:
        reader = _StreamReader(stored, sha)
        header = read_header(reader)
        opener = _ChunkOpener(header, open_cipher(header, keys))
        with closing(_ordered_map(opener, read_frames(reader, header), threads)) as plaintext:
            for plain in plaintext:
                if plain:
                    yield plain
        if expected_sha256 is not None and sha.hexdigest() != expected_sha256.lower():
            raise ChecksumMismatch(
                f"the stored object's SHA-256 is {sha.hexdigest()}, but {expected_sha256} was recorded for it",
                hint="the object was replaced or damaged; restore it from another copy",
            )
    finally:
        sha.close()


class _StreamReader:
    """Exact-size reads over an iterable of pieces; hashes every stored byte it consumes."""

    def __init__(self, pieces: Iterable[bytes], sha: _StreamHash):
        self._pieces = iter(pieces)
        self._view = memoryview(b"")
        self._sha = sha
        self.offset = 0  # stored bytes consumed so far

    def read(self, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes; fewer only at the end of the stream."""
        if len(self._view) >= size:
            out = self._view[:size]
            self._view = self._view[size:]
            self.offset += size
            return out
        parts = []
        while size:
            if not self._view and not self._next_piece():
                break
            part = self._view[:size]
            self._view = self._view[len(part) :]
            parts.append(part)
            size -= len(part)
        out = b"".join(parts)
        self.offset += len(out)
        return out

    def _next_piece(self) -> bool:
        for piece in self._pieces:
            if piece:
                piece = piece if type(piece) is bytes else bytes(piece)
                self._sha.update(piece)
                self._view = memoryview(piece)
                return True
        return False


class _ChunkOpener:
    """Authenticates (or checks) and decompresses one frame's payload; called from worker threads."""

    def __init__(self, header: StreamHeader, aead: Any):
        self._header, self._aead = header, aead
        self._local = threading.local()

    def __call__(self, index: int, payload: bytes | memoryview, flags: int, payload_crc: int) -> bytes:
        if self._aead is not None:
            payload = self._decrypt(index, payload, flags)
        elif zlib.crc32(payload) != payload_crc:
            raise TamperedData(f"chunk {index} is damaged: its checksum does not match")
        if flags & CHUNK_RAW:
            if len(payload) > self._header.chunk_size:
                raise TamperedData(f"chunk {index} is larger than the chunk size")
            return bytes(payload)
        if not self._header.flags & STREAM_COMPRESSED:
            raise TamperedData(f"chunk {index} says it is compressed in a stream stored uncompressed")
        return self._decompress(index, payload)

    def _decrypt(self, index: int, payload: bytes | memoryview, flags: int) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(nonce(index), payload, chunk_aad(self._header.raw, index, flags))
        except InvalidTag:
            raise TamperedData(
                f"chunk {index} does not authenticate: it was modified, or moved from another position or object"
            ) from None

    def _decompress(self, index: int, payload: bytes) -> bytes:
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        try:
            size = zstandard.frame_content_size(payload)
            if not 0 <= size <= self._header.chunk_size:
                raise TamperedData(
                    f"chunk {index} is damaged: its recorded size ({size}) is not within "
                    f"the chunk size {self._header.chunk_size}"
                )
            return decompressor.decompress(payload)
        except zstandard.ZstdError as exc:
            raise TamperedData(f"chunk {index} does not decompress: {exc}") from exc


# -- shared ---------------------------------------------------------------------------------------


class _StreamHash:
    """SHA-256 of buffers fed in order. With ``background``, large buffers are hashed on a thread of
    their own (hashlib releases the GIL), so hashing overlaps the caller's reads and writes."""

    BACKGROUND_MIN = 64 << 10  # below this, handing over costs more than hashing in place

    def __init__(self, *, background: bool):
        self._sha = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hadr-sha256") if background else None
        self._pending: deque[Future[None]] = deque()

    def update(self, data: bytes) -> None:
        if self._pool is not None and len(data) >= self.BACKGROUND_MIN:
            self._pending.append(self._pool.submit(self._sha.update, data))
            if len(self._pending) > 8:
                self._pending.popleft().result()
        else:
            self._wait()  # keep the order
            self._sha.update(data)

    def hexdigest(self) -> str:
        self._wait()
        return self._sha.hexdigest()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()


def _ordered_map(fn: Callable[..., bytes], jobs: Iterator[tuple], threads: int) -> Iterator[bytes]:
    """``fn(*job)`` for each job, on ``threads`` workers, yielded in job order, ``threads * 2`` in flight.

    A failure while producing jobs is raised only after the jobs before it are yielded, so the first
    failure in stream order is the one reported.
    """
    if threads <= 1:
        for job in jobs:
            yield fn(*job)
        return
    pending: deque[Future[bytes]] = deque()
    failure: Exception | None = None
    with ThreadPoolExecutor(threads, thread_name_prefix="hadr-pipeline") as pool:
        try:
            while True:
                try:
                    job = next(jobs)
                except StopIteration:
                    break
                except Exception as exc:  # raised in order below, after the chunks before it
                    failure = exc
                    break
                pending.append(pool.submit(fn, *job))
                if len(pending) >= threads * 2:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
    if failure is not None:
        raise failure


# -- helpers for callers --------------------------------------------------------------------------


def iter_file(fileobj: BinaryIO, size: int | None = None, block_size: int = 1 << 20) -> Iterator[bytes]:
    """Blocks read from ``fileobj`` until EOF, or until ``size`` bytes when given."""
    remaining = size
    while remaining is None or remaining > 0:
        block = fileobj.read(block_size if remaining is None else min(block_size, remaining))
        if not block:
            return
        if remaining is not None:
            remaining -= len(block)
        yield block


def open_source(path: str | os.PathLike, block_size: int = 1 << 20) -> Iterator[bytes]:
    """Blocks of the file at ``path``; the file is opened on first use and closed at the end."""
    with open(path, "rb") as fileobj:
        yield from iter_file(fileobj, block_size=block_size)


def write_stream(pieces: Iterable[bytes], fileobj: BinaryIO) -> int:
    """Write every piece to ``fileobj``; return the number of bytes written."""
    total = 0
    for piece in pieces:
        fileobj.write(piece)
        total += len(piece)
    return total
