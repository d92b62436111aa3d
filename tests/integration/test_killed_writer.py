"""kill -9 a process in the middle of fsutil.durable_write, over and over: the target always holds one
version whole (the old or the new, never a mix or a truncation), and what a killed write leaves behind
is a temporary file under its own recognisable name, never the target."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hadr_backup.fsutil import TEMP_NAME

SIZE = 8 << 20  # bytes per version: many writes of 1 MiB each, so that kills land mid-file
ROUNDS = 40
WRITER = """
import hashlib, sys
from hadr_backup.fsutil import durable_write

target, version, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def content(version):
    block = hashlib.sha256(str(version).encode()).digest() * (1 << 15)  # 1 MiB
    for _ in range(size >> 20):
        yield block

print("ready", flush=True)
while True:
    durable_write(target, content(version), mode=0o644)
    print(version, flush=True)
    version += 1
"""


def version_digest(version: int) -> str:
    block = hashlib.sha256(str(version).encode()).digest() * (1 << 15)
    digest = hashlib.sha256()
    for _ in range(SIZE >> 20):
        digest.update(block)
    return digest.hexdigest()


def version_held(target: Path, candidates: list[int]) -> int:
    """Which candidate version ``target`` holds whole; fails the test on anything else."""
    data = target.read_bytes()
    assert len(data) == SIZE, f"{target} is {len(data)} bytes, not {SIZE}: a torn write"
    for version in candidates:
        if data[:32] == hashlib.sha256(str(version).encode()).digest():
            assert hashlib.sha256(data).hexdigest() == version_digest(version), (
                f"{target} starts as version {version} but does not hold it whole"
            )
            return version
    raise AssertionError(f"{target} holds none of versions {candidates[0]}..{candidates[-1]}")


def kill_mid_write(target: Path, first_version: int, rng: random.Random) -> list[int]:
    """Run the writer from ``first_version`` and SIGKILL it at a random moment; the versions it reported
    written."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(first_version), str(SIZE)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert writer.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.4))
    finally:
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    return [int(line) for line in out.split()]


def test_a_killed_writer_leaves_the_old_or_the_new_content_never_a_torn_file(tmp_path: Path) -> None:
    target = tmp_path / "000000010000000000000001"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    held, seen, killed_mid_write = None, set(), 0
    for round_number in range(1, ROUNDS + 1):
        first = round_number * 10_000
        reported = kill_mid_write(target, first, rng)
        if not target.exists():  # killed before the first write ever finished
            assert held is None and not reported
            continue
        # the last write may have been renamed into place before the writer could report it
        candidates = ([held] if held is not None else []) + list(range(first, first + len(reported) + 1))
        now = version_held(target, candidates)
        assert held is None or now >= held  # never back to an older version
        assert now >= (reported[-1] if reported else 0)  # nothing reported written is lost
        held = now
        seen.add(now)
        leftovers = [p for p in tmp_path.iterdir() if p != target]
        for leftover in leftovers:  # what the kill interrupted: under its temporary name only
            match = TEMP_NAME.fullmatch(leftover.name)
            assert match and match["name"] == target.name, leftover.name
            leftover.unlink()
        killed_mid_write += bool(leftovers)
    # not vacuous: many kills landed mid-file, and many new versions were written whole between them
    assert killed_mid_write >= ROUNDS // 3, killed_mid_write
    assert len(seen) >= ROUNDS // 3, len(seen)
