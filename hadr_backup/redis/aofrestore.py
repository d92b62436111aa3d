"""``hadr restore redis --to DIR`` from the AOF archive: the state at a second T, as a multi-part AOF.

The chain is what the last archived manifest names: its base (an RDB-preamble ``.rdb`` or an ``.aof``)
and its incr files in sequence order, each assembled from its archived pieces, every piece checked
against the SHA-256 the archive state recorded. ``DIR/appendonlydir`` receives the base, one incr file
(the incr files concatenated, cut before the first ``#TS:`` annotation later than T, by
``redis-check-aof --truncate-to-timestamp``) and a manifest naming the two. Redis writes ``#TS:<s>``
before the first command of each second, so the restored data holds every command of the seconds up
to T and none after: the instant reached is the last annotation at or before T.

The window is [the base's time (its RDB ``ctime``, or its first ``#TS:``), the last archived ``#TS:``].
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
from typing import Any

from hadr_backup.errors import HadrError, RestoreFailed
from hadr_backup.fsutil import durable_write
from hadr_backup.redis import aoffiles
from hadr_backup.redis.aofarchive import archived_state
from hadr_backup.redis.aoffiles import BASE, INCR
from hadr_backup.repo import layout
from hadr_backup.timefmt import format_time, rfc3339

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
    """The base and incr files of the last archived manifest, and the window they restore to."""

    source: str
    base: ArchivedFile
    incrs: tuple[ArchivedFile, ...]
    start: int  # the base's time, unix seconds
    end: int  # the last archived #TS, unix seconds

    @property
    def prefix(self) -> str:
        """The source's ``appendfilename`` (``appendonly.aof``), read off the base file's name."""
        return BASE_NAME.match(self.base.name)["prefix"]

    def covers(self, second: int) -> bool:
        return self.start <= second <= self.end

    @property
    def window(self) -> AofWindow:
        return AofWindow(self.start, self.end, self.base.name)


@dataclass(frozen=True)
class AofWindow:
    """A Redis source with archived AOF is restorable to any second of [base time, last archived #TS]."""

    start: int
    end: int
    base: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": "aof", "start": rfc3339(self.start), "end": rfc3339(self.end), "base": self.base}

    def describe(self) -> str:
        span = f"from {format_time(self.start)} to {format_time(self.end)}"
        return f"AOF archive: {span}, to the second (base {self.base})"


def load_chain(repo, source: str) -> AofChain | None:
    """The archived chain of ``source``; None without an archive whose base is archived whole."""
    state = archived_state(repo, source)
    if not state or not state.get("manifest"):
        return None
    manifest = aoffiles.parse_manifest(state["manifest"])
    records = state["files"]
    bases = [f for f in manifest.files if f.type == BASE]
    if not bases or not records.get(bases[0].name, {}).get("complete") or not BASE_NAME.match(bases[0].name):
        return None
    base = _archived(bases[0], records)
    incrs = tuple(_archived(f, records) for f in sorted(manifest.files, key=lambda f: f.seq) if f.type == INCR)
    start = head_time(repo, source, base)
    if start is None:
        return None
    end = last_timestamp(repo, source, incrs)
    return AofChain(source, base, incrs, start, max(start, end or start))


def _archived(aof_file, records: dict) -> ArchivedFile:
    record = records.get(aof_file.name, {"pieces": []})
    return ArchivedFile(aof_file.name, aof_file.seq, tuple(tuple(p) for p in record["pieces"]))


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
    head = b""
    for chunk in file_chunks(repo, source, archived):
        head += chunk
        if len(head) >= HEAD_BYTES:
            break
    if head.startswith(b"REDIS"):
        return aoffiles.rdb_ctime(head)
    found = next(aoffiles.timestamps(io.BytesIO(head), len(head)), None)
    return found[1] if found else None


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
