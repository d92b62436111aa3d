"""The stored stream format: header and frame layout, packing and parsing, the object key.

Version 1 (all integers big-endian)::

    header  magic        8  b"\\x89HADR\\r\\n\\x1a"
            version      1  1
            flags        1  bit 0: chunks may be zstd-compressed; bit 1: encrypted
            chunk_size   4  most plaintext bytes in one chunk (bounds what a reader allocates)
            salt        16  random per object
            key_check    8  encrypted: proves the data key before any chunk is read; else zeros
            key_id_len   1  then key_id (ASCII, the data key's id; empty when not encrypted)
            header_crc   4  CRC-32 of every header byte before it
    frame*  length       4  payload bytes
            index        8  0, 1, 2, ... in order
            flags        1  bit 0: final chunk; bit 1: stored without compression
            payload_crc  4  CRC-32 of the payload when not encrypted; 0 when encrypted
            frame_crc    4  CRC-32 of the 17 frame bytes before it
            payload         zstd frame of the chunk (or the chunk itself), then AES-256-GCM when encrypted

The last frame carries the final flag, and every stream has one (an empty input is a single empty final
chunk), so a stream cut at a chunk boundary is still caught.

Encryption: the object key and the key check are HKDF-SHA256(data key, salt, "hadr-stream-v1" + key_id);
a fresh salt per object makes every object key unique, so the nonce of chunk ``i`` is simply ``i``
(12 bytes). The AAD of each chunk is the whole header + index + chunk flags: a chunk cannot be modified,
moved to another position or another object, or have its final flag set or cleared without failing
authentication. Without encryption the CRC-32s catch accidental damage (not deliberate tampering).

Parsing checks framing only (checksums of the header and frame headers, order, length, the end); the
pipeline authenticates, checks and decompresses the payloads.
"""

from __future__ import annotations

import hmac
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from hadr_backup.errors import (
    ChunkOrderError,
    IntegrityError,
    KeyMissing,
    TamperedData,
    TruncatedObject,
    WrongKey,
)
from hadr_backup.repo.keys import DataKey

MAGIC = b"\x89HADR\r\n\x1a"
FORMAT_VERSION = 1
STREAM_COMPRESSED, STREAM_ENCRYPTED = 1, 2
CHUNK_FINAL, CHUNK_RAW = 1, 2
MAX_CHUNK_SIZE = 64 << 20
TAG_SIZE = 16

_HEAD = struct.Struct(">8sBBI16s8sB")
_FRAME = struct.Struct(">IQBI")
_CRC = struct.Struct(">I")
_CHUNK_AAD = struct.Struct(">QB")
FRAME_HEADER_SIZE = _FRAME.size + _CRC.size


@dataclass(frozen=True)
class StreamHeader:
    raw: bytes  # the header bytes as stored, the AAD prefix of every chunk
    flags: int
    chunk_size: int
    salt: bytes
    key_check: bytes
    key_id: str


class StoredReader(Protocol):
    """Exact-size reads over the stored bytes; ``offset`` counts the bytes consumed so far."""

    offset: int

    def read(self, size: int) -> bytes | memoryview: ...


# -- writing ----------------------------------------------------------------------------------------


def new_header(*, compressed: bool, chunk_size: int, data_key: DataKey | None) -> tuple[bytes, Any]:
    """(header bytes with a fresh salt, AES-GCM under the object key or None when not encrypted)."""
    salt = os.urandom(16)
    flags = STREAM_COMPRESSED if compressed else 0
    key_id, key_check, aead = b"", bytes(8), None
    if data_key is not None:
        flags |= STREAM_ENCRYPTED
        key_id = data_key.id.encode("ascii")
        aead, key_check = object_cipher(data_key, salt)
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, flags, chunk_size, salt, key_check, len(key_id)) + key_id
    return head + _CRC.pack(zlib.crc32(head)), aead


def pack_frame(index: int, flags: int, payload: bytes | bytearray | memoryview, *, encrypted: bool) -> bytes:
    """One frame: its header (payload CRC only when not encrypted) followed by the payload."""
    payload_crc = 0 if encrypted else zlib.crc32(payload)
    frame = _FRAME.pack(len(payload), index, flags, payload_crc)
    return b"".join((frame, _CRC.pack(zlib.crc32(frame)), payload))


def chunk_aad(header: bytes, index: int, flags: int) -> bytes:
    """The associated data that binds a chunk to its object, position and flags."""
    return header + _CHUNK_AAD.pack(index, flags)


def nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


# -- reading ----------------------------------------------------------------------------------------


def read_header(reader: StoredReader) -> StreamHeader:
    fixed = bytes(reader.read(_HEAD.size))
    if fixed[: len(MAGIC)] != MAGIC[: len(fixed)]:
        raise IntegrityError(
            "the object does not start with a hadr stream header: it is not a hadr object, or its header is damaged"
        )
    if len(fixed) < _HEAD.size:
        raise TruncatedObject(
            f"the object ends inside its header ({len(fixed)} bytes)"
            if fixed
            else "the object is empty: it has no header"
        )
    _, version, flags, chunk_size, salt, key_check, key_id_len = _HEAD.unpack(fixed)
    rest = bytes(reader.read(key_id_len + _CRC.size))
    if len(rest) < key_id_len + _CRC.size:
        raise TruncatedObject(f"the object ends inside its header ({len(fixed) + len(rest)} bytes)")
    raw = fixed + rest
    if zlib.crc32(raw[: -_CRC.size]) != _CRC.unpack(rest[-_CRC.size :])[0]:
        raise TamperedData("the object header is damaged: its checksum does not match")
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"the object uses stream format {version}; this hadr reads format {FORMAT_VERSION}", hint="upgrade hadr"
        )
    key_id = rest[:key_id_len].decode("ascii", "replace")
    if (
        flags & ~(STREAM_COMPRESSED | STREAM_ENCRYPTED)
        or not 1 <= chunk_size <= MAX_CHUNK_SIZE
        or bool(flags & STREAM_ENCRYPTED) != bool(key_id)
    ):
        raise TamperedData(f"the object header is invalid (flags {flags:#x}, chunk size {chunk_size})")
    return StreamHeader(raw, flags, chunk_size, salt, key_check, key_id)


def open_cipher(header: StreamHeader, keys: Callable[[str], DataKey] | None) -> Any:
    """AES-GCM under the object key once the header's key check proves the data key; None if not encrypted."""
    if not header.flags & STREAM_ENCRYPTED:
        return None
    hint = "configure the master key that wraps this data key (encryption.key_file or key_env)"
    try:
        data_key = keys(header.key_id) if keys is not None else None
    except LookupError:
        data_key = None
    if data_key is None:
        raise KeyMissing(f"the object is encrypted with data key {header.key_id} and that key was not given", hint=hint)
    if data_key.id != header.key_id:
        raise WrongKey(f"the object is encrypted with data key {header.key_id}, but key {data_key.id} was given")
    aead, key_check = object_cipher(data_key, header.salt)
    if not hmac.compare_digest(key_check, header.key_check):
        raise WrongKey(
            f"data key {header.key_id} does not open this object: the key check in its header "
            "does not match (a different key with the same id)",
            hint=hint,
        )
    return aead


def read_frames(reader: StoredReader, header: StreamHeader) -> Iterator[tuple[int, bytes | memoryview, int, int]]:
    """(index, payload, chunk flags, payload crc) of each frame, checking framing, order and the end."""
    limit = header.chunk_size + TAG_SIZE
    index = 0
    while True:
        offset = reader.offset
        head = reader.read(FRAME_HEADER_SIZE)
        if len(head) < FRAME_HEADER_SIZE:
            where = f"inside the frame header of chunk {index}" if head else f"before chunk {index}"
            raise TruncatedObject(
                f"the object ends at byte {reader.offset}, {where}: "
                "its final chunk is missing (the object was truncated)"
            )
        length, flags, payload_crc = _parse_frame_head(head, index, offset, limit)
        payload = reader.read(length)
        if len(payload) < length:
            raise TruncatedObject(
                f"the object ends inside chunk {index} ({len(payload)} of {length} bytes "
                f"from byte {offset + FRAME_HEADER_SIZE}): it was truncated"
            )
        yield index, payload, flags, payload_crc
        if flags & CHUNK_FINAL:
            break
        index += 1
    if reader.read(1):
        raise TamperedData(
            f"the object goes on after its final chunk {index} (extra bytes at byte {reader.offset - 1})"
        )


def _parse_frame_head(head: bytes | memoryview, index: int, offset: int, limit: int) -> tuple[int, int, int]:
    """(payload length, chunk flags, payload crc) of the frame header of chunk ``index`` at ``offset``."""
    length, found, flags, payload_crc, frame_crc = struct.unpack(">IQBII", head)
    if zlib.crc32(head[: _FRAME.size]) != frame_crc:
        raise TamperedData(f"the frame header of chunk {index} at byte {offset} is damaged")
    if found != index:
        raise ChunkOrderError(_order_message(index, found, offset))
    if length > limit or flags & ~(CHUNK_FINAL | CHUNK_RAW):
        raise TamperedData(
            f"the frame header of chunk {index} at byte {offset} is invalid (length {length}, flags {flags:#x})"
        )
    return length, flags, payload_crc


def _order_message(expected: int, found: int, offset: int) -> str:
    if found > expected:
        return (
            f"chunk {expected} is missing: chunk {found} is in its place at byte {offset} "
            "(chunks were dropped or reordered)"
        )
    return (
        f"chunk {found} appears again at byte {offset}, where chunk {expected} belongs "
        "(chunks were reordered or repeated)"
    )


# -- the object key ---------------------------------------------------------------------------------


def object_cipher(data_key: DataKey, salt: bytes) -> tuple[Any, bytes]:
    """(AES-GCM under this object's key, key check) for ``data_key`` and the object's ``salt``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    okm = _hkdf_sha256(data_key.secret, salt, b"hadr-stream-v1" + data_key.id.encode("ascii"), 40)
    return AESGCM(okm[:32]), okm[32:]


def _hkdf_sha256(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    prk = hmac.digest(salt, secret, "sha256")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]
