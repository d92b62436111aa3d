"""Which archived AOF retention may remove: the files older than the base the oldest kept instant needs.

A restore to an instant T starts from the newest base file written at or before T and replays the incr
files after it. So with T the oldest instant retention keeps (the oldest kept snapshot), every file wholly
older than that base can go: an older base, and an incr file whose last ``#TS:`` second is before the base's
— a rewrite opens the new incr file before it forks the child that writes the base, so an incr file that
ended before the base began is all in it. An incr file of a generation the archive recorded
(aofgenerations.py) goes with that generation's base, and only with it: a kept generation stays whole. The
files of the last archived manifest (the current generation) are never removed, nor the archive state, nor a
file whose time cannot be read. A generation with a removed file is no longer a window (aofwindows.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hadr_backup.engines import StreamObject
from hadr_backup.errors import HadrError, ObjectChanged
from hadr_backup.redis import aoffiles
from hadr_backup.redis.aofarchive import AofArchiveChanged, archived_state
from hadr_backup.redis.aofgenerations import generations
from hadr_backup.redis.aofrestore import BASE_NAME, ArchivedFile, head_time, last_timestamp
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry


@dataclass(frozen=True)
class AofRecord:
    """One archived AOF file as retention sees it."""

    name: str
    seq: int
    is_base: bool
    start: int | None  # when it begins (unix seconds): a base's ctime, an incr's first #TS; None: unknown
    end: int | None  # an incr's last #TS (a base's: its start); None: unknown
    current: bool  # named by the last archived manifest as its base or an incr file
    generation: str | None = None  # an incr file's: the base of the generation the archive recorded it in


def expired_aof(records: Sequence[AofRecord], keep_from: float) -> list[AofRecord]:
    """The records wholly older than the newest base that begins at or before ``keep_from``; an incr file
    of a recorded generation goes when its base does."""
    bases = sorted((r for r in records if r.is_base and r.start is not None), key=lambda r: r.start)
    needed = [b for b in bases if b.start <= keep_from]
    if not needed:
        return []
    floor = needed[-1].start

    def older(record: AofRecord) -> bool:
        moment = record.start if record.is_base else record.end
        return moment is not None and moment < floor

    candidates = [r for r in records if not r.current and r.name != needed[-1].name]
    gone_bases = {r.name for r in candidates if r.is_base and older(r)}
    gone = [
        r
        for r in candidates
        if (r.name in gone_bases if r.is_base else r.generation in gone_bases if r.generation else older(r))
    ]
    return sorted(gone, key=lambda r: (r.start or 0, r.seq))


def stream_expired(repo, source: str, kept: Sequence[BackupEntry]) -> list[StreamObject]:
    instants = [e.consistent_at for e in kept if e.consistent_at is not None]
    state = archived_state(repo, source)
    if not instants or not state:
        return []
    records = _records(repo, source, state)
    pruned = [r for r in records if state["files"][r.name].get("pruned")]  # a prune began removing them
    expired = []
    for record in pruned + expired_aof([r for r in records if r not in pruned], min(instants)):
        expired += [
            StreamObject(info.key, info.size) for info in repo.store.list(layout.aof_file_prefix(source, record.name))
        ]
    return expired


def _records(repo, source: str, state: dict) -> list[AofRecord]:
    manifest = aoffiles.parse_manifest(state.get("manifest") or "")
    current = {f.name for f in manifest.files if f.type in (aoffiles.BASE, aoffiles.INCR)}
    generation_of = {incr: g.base for g in generations(state) for incr in g.incrs}
    records = []
    for name, record in state.get("files", {}).items():
        archived = ArchivedFile(name, int(record.get("seq", 0)), tuple(tuple(p) for p in record.get("pieces", [])))
        is_base = BASE_NAME.match(name) is not None
        start = end = None
        if (
            archived.pieces and not record.get("pruned") and (is_base or name not in current)
        ):  # the current incr files stay: unread
            try:
                start = head_time(repo, source, archived)
                end = start if is_base else last_timestamp(repo, source, (archived,))
            except HadrError:
                start = end = None  # unreadable: its time is unknown, so it stays
        records.append(AofRecord(name, archived.seq, is_base, start, end, name in current, generation_of.get(name)))
    return records


def forget_files(repo, source: str, keys: Sequence[str], attempts: int = 10) -> None:
    """Mark the archived files the piece ``keys`` belong to ``pruned`` in the archive state (compare and
    swap), before the pieces are deleted: `verify repo` no longer expects them, and a prune killed halfway
    finds them again. A concurrent `hadr archive redis` run sees the state change and retries."""
    names = {name for key in keys if (name := layout.aof_file_of(source, key))}
    for _attempt in range(attempts):
        state, token = repo.read_json_versioned(layout.aof_state(source))
        if not state or all(state["files"].get(n, {"pruned": True}).get("pruned") for n in names):
            return
        for name in names & set(state["files"]):
            state["files"][name]["pruned"] = True
        try:
            repo.put_json_if(layout.aof_state(source), state, token=token)
            return
        except ObjectChanged:
            continue
    raise AofArchiveChanged(f"{layout.aof_state(source)} kept changing under prune", hint="run hadr prune again")
