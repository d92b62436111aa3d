"""Stream pipeline throughput: hadr's encode/decode against zstd | openssl | sha256sum on the same file.

Write: read the input file, compress (zstd level 3, two threads), encrypt, hash the stored bytes, write them.
Read: read the stored file, hash it, decrypt, decompress, write the plaintext. hadr runs as a fresh
``python3`` process per run, like the shell pipeline, so interpreter start-up counts against it.

The input is generated, deterministic and the same for both sides: rows of text with random ids, numbers
and times (as in a table dump) plus a share of random bytes (as in already-compressed blobs); zstd -3
stores it at about a third of its size. ``HADR_BENCH_SIZE`` (bytes, default 1 GiB) and
``HADR_BENCH_DIR`` (default: the system temp dir) change the size and where the files go.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from runner import ROOT, Figure, timed

SIZE = int(os.environ.get("HADR_BENCH_SIZE", 1 << 30))
RUNS = 3
COMPETITOR = "zstd -T2 -3 | openssl aes-256-ctr | sha256sum"

OURS_WRITE = """
import sys
from hadr_backup.repo.keys import DataKey
from hadr_backup.repo.pipeline import Codec, encode, write_stream
source_path, stored_path = sys.argv[1:3]
key = DataKey.from_secret(bytes(32))
with open(source_path, "rb") as source, open(stored_path, "wb") as out:
    stream, digest = encode(source, Codec(level=3, threads=2, data_key=key))
    write_stream(stream, out)
with open(stored_path + ".sha256", "w") as out:
    out.write(digest.sha256)
"""

OURS_READ = """
import sys
from hadr_backup.repo.keys import DataKey
from hadr_backup.repo.pipeline import decode, open_source, write_stream
stored_path, plain_path = sys.argv[1:3]
key = DataKey.from_secret(bytes(32))
with open(stored_path + ".sha256") as recorded:
    expected = recorded.read()
with open(plain_path, "wb") as out:
    write_stream(decode(open_source(stored_path), lambda key_id: key, expected_sha256=expected), out)
"""

THEIRS_WRITE = (
    "set -o pipefail; zstd -q -T2 -3 < {src} | openssl enc -aes-256-ctr -pass pass:x -pbkdf2 "
    "| tee {stored} | sha256sum > {stored}.sha256"
)
THEIRS_READ = (
    "set -o pipefail; sha256sum {stored} > {stored}.check & "
    "openssl enc -d -aes-256-ctr -pass pass:x -pbkdf2 < {stored} | zstd -q -d > {plain}; "
    "status=$?; wait; exit $status"
)

_ROW = (
    b"INSERT INTO data_item VALUES ('hhhhhhhhhhhhhhhhhhhhhhhh', 'arweave', 'image/png', 1ddddd, "
    b"'2024-05-01 12:dd:dd+00', 'pending');\n"
)
_HEX = bytes.maketrans(bytes(range(256)), b"0123456789abcdef" * 16)
_DIGITS = bytes.maketrans(bytes(range(256)), b"0123456789" * 25 + b"012345")


def backup_like_blocks(size: int, seed: int = 1, rows_per_block: int = 8192):
    """Deterministic blocks of dump-like rows followed by random bytes (5 row bytes to 1 random byte)."""
    rng = random.Random(seed)
    columns = [(i, _HEX if c == ord("h") else _DIGITS) for i, c in enumerate(_ROW) if c in b"hd"]
    produced = 0
    while produced < size:
        rows = bytearray(_ROW * rows_per_block)
        for position, alphabet in columns:  # fill one column of every row at once
            rows[position :: len(_ROW)] = rng.randbytes(rows_per_block).translate(alphabet)
        block = bytes(rows) + rng.randbytes(len(rows) // 5)
        block = block[: size - produced]
        produced += len(block)
        yield block


def write_input(path: Path, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "wb") as out:
        for block in backup_like_blocks(size):
            sha.update(block)
            out.write(block)
    return sha.hexdigest()


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def _fresh(*paths: Path) -> None:
    """Start each timed run alike: no old output, no dirty pages of an earlier run being written back."""
    for path in paths:
        path.unlink(missing_ok=True)
    os.sync()


def run() -> list[Figure]:
    if not (shutil.which("zstd") and shutil.which("openssl")):
        raise RuntimeError("bench_pipeline needs the zstd and openssl commands (apt-get install zstd openssl)")
    work = Path(tempfile.mkdtemp(prefix="hadr-bench-", dir=os.environ.get("HADR_BENCH_DIR")))
    try:
        return _measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(work: Path) -> list[Figure]:
    src = work / "input.bin"
    source_sha = write_input(src, SIZE)
    paths = {side: (work / f"{side}.stored", work / f"{side}.plain") for side in ("ours", "theirs")}
    commands = {
        "ours": (
            [sys.executable, "-c", OURS_WRITE, str(src), str(paths["ours"][0])],
            [sys.executable, "-c", OURS_READ, *map(str, paths["ours"])],
        ),
        "theirs": (
            THEIRS_WRITE.format(src=src, stored=paths["theirs"][0]),
            THEIRS_READ.format(stored=paths["theirs"][0], plain=paths["theirs"][1]),
        ),
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(RUNS):  # interleaved, so that a slow spell of the machine hits both sides
        for side, (write, read) in commands.items():
            stored, plain = paths[side]
            _fresh(stored)
            best[side, "write"] = min(best.get((side, "write"), float("inf")), timed(write))
            _fresh(plain)
            best[side, "read"] = min(best.get((side, "read"), float("inf")), timed(read))
    for side, (_, plain) in paths.items():
        if file_sha256(plain) != source_sha:
            raise RuntimeError(f"{side}: the plaintext read back differs from the input")
    megabytes = SIZE / 1e6
    label = f"{SIZE / (1 << 30):g} GiB" if SIZE >= 1 << 30 else f"{SIZE / (1 << 20):g} MiB"
    stored_mb = {side: paths[side][0].stat().st_size / 1e6 for side in paths}
    return [
        Figure(
            f"pipeline write {label} (encrypted, zstd -3, 2 threads)",
            megabytes / best["ours", "write"],
            megabytes / best["theirs", "write"],
            "MB/s",
            True,
            COMPETITOR,
            "ratio >= 0.8",
        ),
        Figure(
            f"pipeline read {label} (verify, decrypt, decompress)",
            megabytes / best["ours", "read"],
            megabytes / best["theirs", "read"],
            "MB/s",
            True,
            "sha256sum & openssl -d | zstd -d",
            "ratio >= 0.8",
        ),
        Figure(f"stored size of {label}", stored_mb["ours"], stored_mb["theirs"], "MB", False, COMPETITOR, ""),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from runner import main

    sys.exit(main(["pipeline", *sys.argv[1:]]))
