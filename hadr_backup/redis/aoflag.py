"""How far the AOF archive of a Redis source is behind its live AOF directory (for ``hadr info``).

Bytes: what the files the live manifest lists hold beyond the offset archived of each. Seconds: the age of
the oldest write not archived, read off the first ``#TS:`` annotation after the archived offset of the
incr file Redis appends to (Redis writes one before the first command of each second); 0 when nothing
waits. Both are unknown (with the reason) when the AOF directory is not on this host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hadr_backup.redis import aoffiles
from hadr_backup.redis.aoffiles import HISTORY
from hadr_backup.redis.aofrestore import AOF_DIR_NAME, BASE_NAME
from hadr_backup.repo import layout

DEFAULT_FILE_NAME = "appendonly.aof"


@dataclass(frozen=True)
class AofLag:
    bytes: int | None
    seconds: float | None
    last_piece_at: float | None  # when the newest piece of the incr file was stored
    basis: str  # how it was measured, or why it is unknown


def measure_lag(repo, source, state: dict, now: float | None = None) -> AofLag:
    """The lag of ``source`` (a RedisSource) behind its aof_dir, given its archive ``state``."""
    now = time.time() if now is None else now
    files = state.get("files", {})
    last_incr = aoffiles.parse_manifest(state.get("manifest") or "").last_incr
    last_piece_at = _last_piece_at(repo, source.name, last_incr) if last_incr else None
    directory = aoffiles.find_aof_dir(source.aof_dir, AOF_DIR_NAME, _file_name(files))
    if directory is None:
        why = "no aof_dir in the policy" if not source.aof_dir else f"{source.aof_dir} is not on this host"
        return AofLag(None, None, last_piece_at, f"unknown: {why}")
    try:
        manifest = aoffiles.read_manifest(directory, _file_name(files))
        behind = {
            f.name: aoffiles.file_size(directory / f.name) - files.get(f.name, {}).get("archived", 0)
            for f in manifest.files
            if f.type != HISTORY
        }
        oldest = _first_unarchived_second(directory, manifest.last_incr, files)
    except aoffiles.AofUnreadable as error:
        return AofLag(None, None, last_piece_at, f"unknown: {error.message}")
    lag_bytes = sum(max(0, n) for n in behind.values())
    seconds = 0.0 if lag_bytes == 0 else max(0.0, now - oldest) if oldest is not None else None
    basis = f"the live AOF in {directory}" + ("" if seconds is not None or not lag_bytes else "; no #TS waits yet")
    return AofLag(lag_bytes, seconds, last_piece_at, basis)


def _file_name(files: dict) -> str:
    """The source's appendfilename, read off an archived base's name (``appendonly.aof.1.base.rdb``)."""
    for name in files:
        if match := BASE_NAME.match(name):
            return match["prefix"]
    return DEFAULT_FILE_NAME


def _last_piece_at(repo, source: str, file_name: str) -> float | None:
    infos = list(repo.store.list(layout.aof_file_prefix(source, file_name)))
    return max((info.mtime for info in infos), default=None)


def _first_unarchived_second(directory: Path, last_incr: str | None, files: dict) -> int | None:
    if last_incr is None:
        return None
    path = directory / last_incr
    start = files.get(last_incr, {}).get("archived", 0)
    with open(path, "rb") as handle:
        handle.seek(start)
        found = next(aoffiles.timestamps(handle, aoffiles.file_size(path)), None)
        if found:
            return found[1]
        # no annotation since the archived offset: what waits was written in the second of the last one
        # before it (Redis annotates only when the second changes); archived pieces end on commands
        for piece_start, piece_end, _sha in reversed(files.get(last_incr, {}).get("pieces", [])):
            handle.seek(piece_start)
            seconds = [second for _offset, second in aoffiles.timestamps(handle, piece_end)]
            if seconds:
                return seconds[-1]
    return None
