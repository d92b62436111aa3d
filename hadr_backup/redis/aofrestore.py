"""``hadr restore redis --to DIR`` from the AOF archive: the state at a second T, as a multi-part AOF.

A chain is one generation of the archive (aofwindows.py picks it): a base (an RDB-preamble ``.rdb`` or
an ``.aof``) and the incr files after it in sequence order, each assembled from its archived pieces, every
piece checked against the SHA-256 the archive state recorded. ``DIR/appendonlydir`` receives the base, one incr file
(the incr files concatenated, cut before the first ``#TS:`` annotation later than T, by
``redis-check-aof --truncate-to-timestamp``) and a manifest naming the two. Redis writes ``#TS:<s>``
before the first command of each second, so the restored data holds every command of the seconds up
to T and none after: the instant reached is the last annotation at or before T.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hadr_backup.errors import HadrError, RestoreFailed
from hadr_backup.fsutil import durable_write
from hadr_backup.redis import aoffiles
from hadr_backup.repo import layout

AOF_DIR_NAME = "appendonlydir"  # where a restored multi-part AOF goes in --to DIR
HEAD_BYTES = 4096  # enough of a base file for its RDB aux fields or its first annotation
BASE_NAME = re.compile(r"^(?P<prefix>.+)\.(?P<seq>\d+)\.base\.(rdb|aof)$")


@dataclass(frozen=True)
class ArchivedFile:
    name: str
    seq: int
    pieces: tuple[tuple[int, int, str], ...]  # (start, end, sha256)


@dataclass(frozen=True)
class AofChain:
    """A base and the incr files after it (one generation, aofwindows.py), and the window they restore to."""

    source: str
    base: ArchivedFile
    incrs: tuple[ArchivedFile, ...]
    start: int  # the base's time, unix seconds
    end: int  # the last second it restores whole, unix seconds
    current: bool = True  # the last archived manifest's generation; False: a closed one

    @property
    def prefix(self) -> str:
        """The source's ``appendfilename`` (``appendonly.aof``), read off the base file's name."""
        return BASE_NAME.match(self.base.name)["prefix"]

    def covers(self, second: int) -> bool:
        return self.start <= second <= self.end


def archived_file(name: str, record: dict | None) -> ArchivedFile:
    """An archived file as its archive state record says (no record: nothing archived)."""
    record = record or {"pieces": []}
    return ArchivedFile(name, int(record.get("seq", 0)), tuple(tuple(p) for p in record["pieces"]))


def file_chunks(repo, source: str, archived: ArchivedFile) -> Iterator[bytes]:
    """The archived bytes of one file, piece after piece, each checked against the SHA-256 of its
    bytes the archive state recorded (a piece read in part is not checked)."""
    for start, end, sha256 in archived.pieces:
        key = layout.aof_piece(source, archived.name, start, end)
        digest = hashlib.sha256()
        try:
            for chunk in repo.read_object(key):
                digest.update(chunk)
                yield chunk
        except HadrError as error:
            raise _damaged(key, error.message) from error
        if digest.hexdigest() != sha256:
            raise _damaged(key, f"its bytes' SHA-256 is {digest.hexdigest()}, the archive recorded {sha256}")


def _damaged(key: str, why: str) -> RestoreFailed:
    return RestoreFailed(f"archived AOF piece {key} is damaged or missing: {why}", hint="hadr verify repo")


def head_time(repo, source: str, archived: ArchivedFile) -> int | None:
    """When an archived file begins: a base's RDB ``ctime`` (or its first ``#TS:``), an incr's first
    ``#TS:``; None when its first bytes hold neither."""
    head = head_bytes(repo, source, archived)
    if head.startswith(b"REDIS"):
        return aoffiles.rdb_ctime(head)
    found = next(aoffiles.timestamps(io.BytesIO(head), len(head)), None)
    return found[1] if found else None


def head_bytes(repo, source: str, archived: ArchivedFile, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of an archived file (all of it when it is shorter)."""
    head = b""
    for chunk in file_chunks(repo, source, archived):
        head += chunk
        if len(head) >= size:
            break
    return head[:size]


def last_timestamp(repo, source: str, incrs: tuple[ArchivedFile, ...]) -> int | None:
    """The last ``#TS:`` archived: read from the newest piece back (pieces begin on a command)."""
    for archived in reversed(incrs):
        for piece in reversed(archived.pieces):
            data = b"".join(file_chunks(repo, source, ArchivedFile(archived.name, archived.seq, (piece,))))
            found = list(aoffiles.timestamps(io.BytesIO(data), len(data)))
            if found:
                return found[-1][1]
    return None


def write_chain(repo, chain: AofChain, to: Path, second: int | None) -> tuple[int, list[str]]:
    """Write the chain up to ``second`` (None: all of it) into ``to/appendonlydir``; (the instant
    reached, the names written). On any error what this wrote is removed."""
    directory = to / AOF_DIR_NAME
    created = not to.exists()
    try:
        # 1. a fresh appendonlydir (an old one only with --force, which refuse_unsafe checked)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        # 2. the base whole, the incr files as one
        durable_write(directory / chain.base.name, file_chunks(repo, chain.source, chain.base))
        incr_seq = chain.incrs[0].seq if chain.incrs else chain.base.seq
        incr_name = f"{chain.prefix}.{incr_seq}.incr.aof"
        incr = directory / incr_name
        durable_write(incr, (c for f in chain.incrs for c in file_chunks(repo, chain.source, f)))
        # 3. cut before the first #TS later than the target second
        reached = cut_at(incr, second, chain.start)
        # 4. the manifest naming the two
        manifest = f"file {chain.base.name} seq {chain.base.seq} type b\nfile {incr_name} seq {incr_seq} type i\n"
        durable_write(directory / f"{chain.prefix}.manifest", manifest.encode())
        return reached, [chain.base.name, incr_name, f"{chain.prefix}.manifest"]
    except BaseException:
        shutil.rmtree(to if created else directory, ignore_errors=True)
        raise


def cut_at(incr: Path, second: int | None, base_time: int) -> int:
    """Truncate ``incr`` before its first ``#TS:`` later than ``second`` and return the last annotation
    kept (``base_time`` when none is): ``redis-check-aof --truncate-to-timestamp`` does it, checked
    against where hadr finds the cut; the same cut in Python when the tool refuses (nothing before T)."""
    size = incr.stat().st_size
    with open(incr, "rb") as handle:
        marks = list(aoffiles.timestamps(handle, size))
    kept = [ts for _offset, ts in marks if second is None or ts <= second]
    later = [offset for offset, ts in marks if second is not None and ts > second]
    if later:
        cut = later[0]
        done = subprocess.run(
            ["redis-check-aof", "--truncate-to-timestamp", str(second), str(incr)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            os.truncate(incr, cut)
        if incr.stat().st_size != cut:
            raise RestoreFailed(
                f"redis-check-aof cut {incr} at {incr.stat().st_size} bytes, hadr expected {cut}",
                hint=(done.stdout + done.stderr).strip()[-500:],
            )
        with open(incr, "rb+") as handle:
            os.fsync(handle.fileno())
    return kept[-1] if kept else base_time


def target_second(target: float) -> int:
    """AOF annotations are whole seconds: a target restores everything of its second."""
    return math.floor(target)
