"""The stream pipeline: round trips, and every kind of damage caught with a specific error."""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import threading
import zlib

import pytest

from hadr_backup.errors import (
    ChecksumMismatch,
    ChunkOrderError,
    IntegrityError,
    KeyMissing,
    TamperedData,
    TruncatedObject,
    UsageError,
    WrongKey,
)
from hadr_backup.repo.keys import DataKey, new_data_key
from hadr_backup.repo.pipeline import (
    FRAME_HEADER_SIZE,
    MAGIC,
    Codec,
    decode,
    encode,
    iter_file,
    open_source,
    write_stream,
)

CHUNK = 4096
KEY = DataKey.from_secret(bytes(range(32)))


def compressible(size: int, seed: int = 1) -> bytes:
    """Rows of text with random fields, like a table dump: compresses a few times over."""
    rng = random.Random(seed)
    rows = b"".join(
        b"%08d,user-%05d,%s,pending\n" % (i, rng.randrange(99999), rng.randbytes(6).hex().encode())
        for i in range(size // 40 + 1)
    )
    return rows[:size]


def noise(size: int, seed: int = 2) -> bytes:
    return random.Random(seed).randbytes(size)


def keys_for(*data_keys: DataKey):
    table = {k.id: k for k in data_keys}
    return lambda key_id: table[key_id]


def store(
    data: bytes, *, key: DataKey | None = KEY, chunk_size: int = CHUNK, threads: int = 2, level: int = 3
) -> bytes:
    stream, _ = encode([data], Codec(level=level, threads=threads, data_key=key, chunk_size=chunk_size))
    return b"".join(stream)


def load(stored: bytes, *, key: DataKey | None = KEY, threads: int = 2, expected_sha256: str | None = None) -> bytes:
    return b"".join(decode([stored], keys_for(key) if key else None, threads=threads, expected_sha256=expected_sha256))


def split(stored: bytes) -> tuple[bytes, list[bytes]]:
    """(header, frames) of a stored stream, for tests that damage it on purpose."""
    header_size = len(MAGIC) + 1 + 1 + 4 + 16 + 8 + 1 + stored[38] + 4
    frames, offset = [], header_size
    while offset < len(stored):
        length = struct.unpack_from(">I", stored, offset)[0]
        frames.append(stored[offset : offset + FRAME_HEADER_SIZE + length])
        offset += FRAME_HEADER_SIZE + length
    return stored[:header_size], frames


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x40]) + data[offset + 1 :]


def reframe(frame: bytes, **fields: int) -> bytes:
    """A frame with header fields changed and its frame CRC recomputed, as a forger would do."""
    length, index, flags, payload_crc = struct.unpack_from(">IQBI", frame)
    values = {"length": length, "index": index, "flags": flags, "payload_crc": payload_crc, **fields}
    head = struct.pack(">IQBI", values["length"], values["index"], values["flags"], values["payload_crc"])
    return head + struct.pack(">I", zlib.crc32(head)) + frame[FRAME_HEADER_SIZE:]


ENCRYPTION = pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
@ENCRYPTION
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 123])
def test_round_trip_at_chunk_edges(size, key, threads):
    data = compressible(size)
    codec = Codec(threads=threads, data_key=key, chunk_size=CHUNK)
    stream, digest = encode([data], codec)
    stored = b"".join(stream)
    assert digest.raw_size == size
    assert digest.stored_size == len(stored)
    assert digest.sha256 == hashlib.sha256(stored).hexdigest()
    assert load(stored, key=key, threads=threads, expected_sha256=digest.sha256) == data


@ENCRYPTION
@pytest.mark.parametrize("make", [compressible, noise], ids=["compressible", "random"])
def test_round_trip_several_mib_default_chunks(make, key):
    data = make(5 * (1 << 20) + 17)
    stream, digest = encode([data], Codec(data_key=key))
    stored = b"".join(stream)
    assert load(stored, key=key, expected_sha256=digest.sha256) == data
    if make is compressible:
        assert digest.stored_size < len(data) / 2
    else:  # incompressible chunks are stored as they are, not expanded by zstd
        assert digest.stored_size < len(data) + 6 * (FRAME_HEADER_SIZE + 16) + 100


def test_pieces_of_any_size_and_a_file_give_the_same_plaintext():
    data = compressible(3 * CHUNK + 77)
    codec = Codec(chunk_size=CHUNK, data_key=KEY)
    small_pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    for source in (small_pieces, [data], [b"", data, b""], io.BytesIO(data)):
        stream, digest = encode(source, codec)
        assert load(b"".join(stream)) == data
        assert digest.raw_size == len(data)


def test_short_reads_from_a_pipe_still_make_full_chunks():
    data = compressible(5 * CHUNK + 1)

    class Pipe(io.RawIOBase):  # returns at most 1000 bytes per read, like a pipe or a socket
        def __init__(self):
            self.source = io.BytesIO(data)

        def read(self, size=-1):
            return self.source.read(min(size, 1000))

    stream, _ = encode(Pipe(), Codec(chunk_size=CHUNK, data_key=None))
    stored = b"".join(stream)
    assert len(split(stored)[1]) == 6
    assert load(stored, key=None) == data


def test_source_reusing_one_buffer_is_copied_before_it_changes():
    data = noise(10 * CHUNK)
    buffer = bytearray(1000)

    def reused():
        for i in range(0, len(data), len(buffer)):
            piece = data[i : i + len(buffer)]
            buffer[: len(piece)] = piece
            yield buffer if len(piece) == len(buffer) else bytearray(piece)

    stream, _ = encode(reused(), Codec(chunk_size=CHUNK, threads=2))
    assert load(b"".join(stream), key=None) == data


def test_stored_bytes_read_in_pieces_of_any_size():
    data = compressible(4 * CHUNK)
    stored = store(data)
    for piece_size in (1, 7, CHUNK + 3):
        pieces = [stored[i : i + piece_size] for i in range(0, len(stored), piece_size)]
        assert b"".join(decode(pieces, keys_for(KEY))) == data


def test_level_zero_stores_uncompressed_and_still_round_trips():
    data = compressible(3 * CHUNK)
    stored = store(data, key=None, level=0)
    assert data[:CHUNK] in stored
    assert load(stored, key=None) == data


def test_encrypted_object_hides_plaintext_and_records_only_the_key_id():
    data = b"balance=1000;" * 1000
    stored = store(data, level=0)
    assert b"balance" not in stored
    assert KEY.id.encode() in split(stored)[0]
    assert KEY.secret not in stored


def test_digest_is_filled_once_the_stream_is_consumed():
    stream, digest = encode([b"x" * 100], Codec())
    assert digest.sha256 == ""
    stored = b"".join(stream)
    assert digest.sha256 == hashlib.sha256(stored).hexdigest()


def test_each_object_gets_its_own_salt():
    assert store(b"same") != store(b"same")


def test_file_helpers(tmp_path):
    path = tmp_path / "src"
    path.write_bytes(b"abcdefghij")
    assert list(open_source(path, block_size=4)) == [b"abcd", b"efgh", b"ij"]
    with open(path, "rb") as fileobj:
        assert list(iter_file(fileobj, size=6, block_size=4)) == [b"abcd", b"ef"]
    out = io.BytesIO()
    assert write_stream([b"ab", b"", b"cde"], out) == 5 and out.getvalue() == b"abcde"


@pytest.mark.parametrize(
    "bad", [dict(chunk_size=0), dict(threads=0), dict(level=99), dict(data_key=DataKey("k", b"short"))]
)
def test_codec_rejects_bad_settings(bad):
    with pytest.raises(UsageError):
        Codec(**bad)


# -- damage ---------------------------------------------------------------------------------------


@ENCRYPTION
def test_flipped_byte_anywhere_in_the_header(key):
    stored = store(compressible(2 * CHUNK), key=key)
    header, _ = split(stored)
    for offset in range(len(header)):
        with pytest.raises(IntegrityError, match="header") as caught:
            load(flip(stored, offset), key=key)
        if offset >= len(MAGIC):
            assert caught.type is TamperedData


@ENCRYPTION
def test_flipped_byte_in_a_chunk_body(key):
    stored = store(compressible(3 * CHUNK), key=key)
    header, frames = split(stored)
    body = len(header) + len(frames[0]) + FRAME_HEADER_SIZE + 5
    with pytest.raises(TamperedData, match="chunk 1 (does not authenticate|is damaged)"):
        load(flip(stored, body), key=key)


@ENCRYPTION
@pytest.mark.parametrize(
    "field_offset", [0, 3, 8, 12, 13, 17], ids=["length-hi", "length-lo", "index", "flags", "payload-crc", "frame-crc"]
)
def test_flipped_byte_in_a_frame_header(key, field_offset):
    stored = store(compressible(3 * CHUNK), key=key)
    header, frames = split(stored)
    with pytest.raises(TamperedData, match="frame header of chunk 1 .* damaged"):
        load(flip(stored, len(header) + len(frames[0]) + field_offset), key=key)


@ENCRYPTION
def test_truncation_at_any_offset_is_caught(key):
    stored = store(compressible(3 * CHUNK + 10), key=key)
    for cut in range(0, len(stored)):
        with pytest.raises(TruncatedObject):
            load(stored[:cut], key=key)


@ENCRYPTION
def test_truncation_exactly_at_a_chunk_boundary(key):
    stored = store(compressible(4 * CHUNK), key=key)
    header, frames = split(stored)
    assert len(frames) == 4
    for kept in range(len(frames)):
        cut = b"".join([header, *frames[:kept]])
        with pytest.raises(TruncatedObject, match=f"before chunk {kept}: its final chunk is missing"):
            load(cut, key=key)


@ENCRYPTION
def test_reordered_chunks(key):
    header, frames = split(store(compressible(4 * CHUNK), key=key))
    frames[1], frames[2] = frames[2], frames[1]
    with pytest.raises(ChunkOrderError, match="chunk 1 is missing: chunk 2 is in its place"):
        load(b"".join([header, *frames]), key=key)


@ENCRYPTION
def test_dropped_middle_chunk(key):
    header, frames = split(store(compressible(4 * CHUNK), key=key))
    with pytest.raises(ChunkOrderError, match="chunk 2 is missing: chunk 3 is in its place"):
        load(b"".join([header, *frames[:2], *frames[3:]]), key=key)


@ENCRYPTION
def test_repeated_chunk(key):
    header, frames = split(store(compressible(4 * CHUNK), key=key))
    with pytest.raises(ChunkOrderError, match="chunk 1 appears again .* where chunk 2 belongs"):
        load(b"".join([header, frames[0], frames[1], frames[1], *frames[2:]]), key=key)


@ENCRYPTION
def test_bytes_after_the_final_chunk(key):
    stored = store(compressible(2 * CHUNK), key=key)
    with pytest.raises(TamperedData, match="after its final chunk 1"):
        load(stored + b"\0", key=key)


def test_renumbered_encrypted_chunks_fail_authentication():
    header, frames = split(store(compressible(4 * CHUNK)))
    swapped = [frames[0], reframe(frames[2], index=1), reframe(frames[1], index=2), frames[3]]
    with pytest.raises(TamperedData, match="chunk 1 does not authenticate"):
        load(b"".join([header, *swapped]))


def test_forged_final_flag_fails_authentication():
    header, frames = split(store(compressible(4 * CHUNK)))
    with pytest.raises(TamperedData, match="chunk 1 does not authenticate"):
        load(b"".join([header, frames[0], reframe(frames[1], flags=frames[1][12] | 1)]))


def test_chunk_from_another_object_under_the_same_key_fails_authentication():
    header, frames = split(store(compressible(3 * CHUNK)))
    _, other = split(store(compressible(3 * CHUNK, seed=9)))
    with pytest.raises(TamperedData, match="chunk 1 does not authenticate"):
        load(b"".join([header, frames[0], other[1], frames[2]]))


def test_not_a_hadr_object():
    with pytest.raises(IntegrityError, match="not a hadr object"):
        load(b"PK\x03\x04 a zip file, say" * 10)
    with pytest.raises(TruncatedObject, match="empty"):
        load(b"")


def test_first_failure_in_stream_order_is_reported_after_the_good_chunks():
    data = compressible(8 * CHUNK)
    header, frames = split(store(data, key=None))
    damaged = [flip(f, FRAME_HEADER_SIZE + 3) if i == 2 else f for i, f in enumerate(frames)]
    damaged[3] = flip(damaged[3], 1)  # a frame header the reader meets while chunk 2 is still in flight
    received = []
    with pytest.raises(TamperedData, match="chunk 2 is damaged"):
        for piece in decode([b"".join([header, *damaged])], None, threads=2):
            received.append(piece)
    assert b"".join(received) == data[: 2 * CHUNK]


# -- keys and checksums ---------------------------------------------------------------------------


def test_wrong_key_with_the_same_id():
    stored = store(b"secret rows" * 100)
    impostor = DataKey(KEY.id, bytes(32))
    with pytest.raises(WrongKey, match=f"data key {KEY.id} does not open this object"):
        b"".join(decode([stored], lambda key_id: impostor))


def test_key_with_another_id():
    stored = store(b"secret rows" * 100)
    other = new_data_key()
    with pytest.raises(WrongKey, match=f"{KEY.id}.*{other.id}"):
        b"".join(decode([stored], lambda key_id: other))


@pytest.mark.parametrize("keys", [None, lambda key_id: None, keys_for()], ids=["no-lookup", "none", "keyerror"])
def test_missing_key_names_the_key_id(keys):
    with pytest.raises(KeyMissing, match=f"data key {KEY.id}"):
        b"".join(decode([store(b"rows")], keys))


def test_key_lookup_errors_of_the_caller_pass_through():
    def refuse(key_id):
        raise KeyMissing(f"no master key configured for {key_id}")

    with pytest.raises(KeyMissing, match="no master key configured"):
        b"".join(decode([store(b"rows")], refuse))


def test_unencrypted_stream_needs_no_key():
    assert load(store(b"rows", key=None), key=None) == b"rows"


def test_expected_sha256_mismatch_is_raised_at_the_end():
    data = compressible(3 * CHUNK)
    stored = store(data)
    received = []
    with pytest.raises(ChecksumMismatch, match="0" * 64):
        for piece in decode([stored], keys_for(KEY), expected_sha256="0" * 64):
            received.append(piece)
    assert b"".join(received) == data
    assert load(stored, expected_sha256=hashlib.sha256(stored).hexdigest().upper()) == data


def test_earlier_failures_come_before_the_checksum():
    stored = store(compressible(3 * CHUNK))
    with pytest.raises(TruncatedObject):
        load(stored[:-1], expected_sha256=hashlib.sha256(stored).hexdigest())


# -- resources ------------------------------------------------------------------------------------


def test_abandoned_streams_release_their_workers():
    before = threading.active_count()
    stored = store(compressible(20 * CHUNK), threads=2)
    reading = decode([stored], keys_for(KEY), threads=2)
    next(reading)
    reading.close()
    writing, _ = encode(iter([os.urandom(CHUNK)] * 20), Codec(chunk_size=CHUNK, threads=2))
    next(writing), next(writing)
    writing.close()
    assert threading.active_count() == before
