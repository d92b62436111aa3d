"""What a prune would remove, over random catalogs and clocks (hypothesis), on an in-memory listing: nothing a
kept backup needs (its objects, objects it shares with expired backups, the WAL it is made consistent with),
WAL continuous from every kept backup's start, never a timeline history or the archive identity; and the AOF
rule (files wholly older than the base the oldest kept instant needs) on random rewrite histories."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from hadr_backup.policy.model import Retention
from hadr_backup.policy.retention import apply_retention
from hadr_backup.postgres import wal
from hadr_backup.postgres.walretention import position
from hadr_backup.redis.aofretention import AofRecord, expired_aof
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import COMPLETE, FAILED, RUNNING, BackupEntry, StoredObject
from hadr_backup.repo.pruneplan import needed_keys, plan_prune
from hadr_backup.repo.storage import ObjectInfo

SEGMENT = 16 << 20
HOUR = 3600.0
START = 1_790_000_000.0
SHA = "0" * 64


class MemoryRepo:
    """What plan_prune reads of a repository: a listing and stat, over a dict of key -> size."""

    def __init__(self, objects: dict[str, int]):
        self.objects = objects
        self.store = self

    def list(self, prefix: str = ""):
        return iter([ObjectInfo(k, s, 0.0) for k, s in sorted(self.objects.items()) if k.startswith(prefix)])

    def stat(self, key: str):
        return ObjectInfo(key, self.objects[key], 0.0) if key in self.objects else None


def wal_key(name: str) -> str:
    return wal.wal_object_key("main", name, hashlib.sha256(name.encode()).hexdigest())


def segment(timeline: int, number: int) -> str:
    return wal.segment_name_from_number(timeline, number, SEGMENT)


def pg_entry(index: int, when: float, number: int, state: str, shared: list[str]) -> BackupEntry:
    backup_id = f"b{index:03d}"
    prefix = layout.backup_prefix("pg", "main", backup_id)
    entry = BackupEntry(id=backup_id, kind="pg", source="main", state=state, started_at=when - 60, prefix=prefix)
    entry.stopped_at = entry.consistent_at = when
    entry.objects = [StoredObject(prefix + "base.tar", 10, 10, SHA), *(StoredObject(k, 5, 5, SHA) for k in shared)]
    start = number * SEGMENT + 0x28
    entry.meta = {
        "tar_objects": [prefix + "base.tar"],
        "manifest_object": prefix + "backup_manifest",
        "timeline": 1,
        "start_lsn": wal.format_lsn(start),
        "stop_lsn": wal.format_lsn(start + 0x1000),
        "start_wal": segment(1, number),
        "stop_wal": segment(1, number),
        "start_time": when - 60,
        "stop_time": when,
        "system_identifier": "1",
        "pg_version_num": 150000,
    }
    entry.needs = [wal_key(segment(1, number))]
    return entry


@st.composite
def repositories(draw):
    count = draw(st.integers(1, 25))
    entries, objects = [], {}
    shared_pool = [f"blobs/shared-{n}" for n in range(4)]  # content shared between backups
    for index in range(count):
        state = draw(st.sampled_from([COMPLETE] * 5 + [FAILED, RUNNING]))
        shared = draw(st.lists(st.sampled_from(shared_pool), max_size=2, unique=True))
        entry = pg_entry(
            index, START + index * draw(st.sampled_from([HOUR, 5 * HOUR, 26 * HOUR])), index + 2, state, shared
        )
        entries.append(entry)
        objects.update({o.key: o.stored_size for o in entry.objects})
        objects[layout.backup_description("pg", "main", entry.id)] = 1
    newest = count + 3
    names = [segment(1, n) for n in range(1, newest)] + [segment(2, n) for n in range(newest - 2, newest + 2)]
    names += [f"{segment(1, 3)}.partial", f"{segment(1, 2)}.00000028.backup", wal.history_name(2)]
    objects.update({wal_key(name): 7 for name in names})
    objects[layout.wal_identity("main")] = 3
    retention = Retention(
        hourly=draw(st.integers(0, 6)),
        daily=draw(st.integers(0, 4)),
        weekly=draw(st.integers(0, 2)),
        monthly=draw(st.integers(0, 2)),
        min_full=draw(st.integers(1, 3)),
    )
    now = START + draw(st.floats(0, 40 * 26 * HOUR))
    return entries, objects, retention, now


@settings(max_examples=200, deadline=None)
@given(repositories())
def test_nothing_a_kept_backup_needs_is_removed_and_its_wal_stays_continuous(case) -> None:
    from hadr_backup.postgres.engine import ENGINE

    entries, objects, retention, now = case
    decisions = apply_retention(entries, retention, now)
    plan = plan_prune(MemoryRepo(objects), decisions)
    removed = {o.key for found in plan.objects.values() for o in found}
    streamed = {o.key for found in plan.stream.values() for o in found}
    kept = [d.entry for d in decisions if d.keep]
    needed = {key for entry in kept if entry.state == COMPLETE for key in needed_keys(ENGINE, entry)}
    assert not (removed | streamed) & needed
    assert layout.wal_identity("main") not in removed | streamed
    assert not any(wal.is_history(k.rsplit("/", 1)[-1].split("-")[0]) for k in removed | streamed)
    # from every kept backup's start on, every archived file of every timeline stays
    starts = [position(e.meta["start_wal"]) for e in kept]
    for key in objects:
        parsed = wal.parse_wal_key(key)
        if parsed and not wal.is_history(parsed[1]) and starts and position(parsed[1]) >= min(starts):
            assert key not in streamed
    if not starts:
        assert not streamed
    # what goes of the stream lies before the oldest kept start; the expired backups' folders empty out
    assert all(position(wal.parse_wal_key(k)[1]) < min(starts) for k in streamed)
    for entry in plan.expire:
        folder = {k for k in objects if k.startswith(entry.object_prefix)}
        assert folder <= {o.key for o in plan.objects[entry.id]}


# -- the AOF rule ----------------------------------------------------------------------------------


@st.composite
def aof_histories(draw):
    """Rewrites at increasing seconds; each generation a base and 1-3 incr files (incr seq across them), the
    last incr of a generation ending at most in the second its successor's base is written."""
    generations = draw(st.integers(1, 6))
    records, second, incr_seq, bases = [], 1000, 1, []
    for gen in range(1, generations + 1):
        current = gen == generations
        bases.append(second)
        records.append(AofRecord(f"appendonly.aof.{gen}.base.rdb", gen, True, second, second, current))
        for _ in range(draw(st.integers(1, 3))):
            start = second + draw(st.integers(-1, 3))  # commands of the second the child forked in
            second = start + draw(st.integers(0, 50))
            records.append(AofRecord(f"appendonly.aof.{incr_seq}.incr.aof", incr_seq, False, start, second, current))
            incr_seq += 1
        # the next base: written in the second the last incr ended, or later, and never before this base
        second = max(second, bases[-1]) + draw(st.integers(0, 5))
    keep_from = draw(st.integers(900, second + 10))
    return records, bases, keep_from


@settings(max_examples=300, deadline=None)
@given(aof_histories())
def test_aof_files_go_only_when_wholly_older_than_the_base_the_oldest_kept_instant_needs(case) -> None:
    records, bases, keep_from = case
    gone = {r.name for r in expired_aof(records, keep_from)}
    assert not any(r.current for r in records if r.name in gone)
    needed = max((gen for gen, at in enumerate(bases, 1) if at <= keep_from), default=None)
    if needed is None:
        assert not gone
        return
    floor = bases[needed - 1]
    for record in records:
        if record.is_base and record.seq >= needed:
            assert record.name not in gone  # the needed base and every later one
        if not record.is_base and record.end >= floor:
            assert record.name not in gone  # it may hold commands at or after the needed base
    # and what is wholly before the needed base does go (unless it is current)
    for record in records:
        wholly_before = (record.start if record.is_base else record.end) < floor
        if wholly_before and not record.current:
            assert record.name in gone


def test_an_incr_file_that_ended_in_the_second_of_the_base_stays() -> None:
    records = [
        AofRecord("appendonly.aof.1.base.rdb", 1, True, 100, 100, False),
        AofRecord("appendonly.aof.1.incr.aof", 1, False, 101, 200, False),  # may have commands after the fork
        AofRecord("appendonly.aof.2.base.rdb", 2, True, 200, 200, True),
        AofRecord("appendonly.aof.2.incr.aof", 2, False, 200, 250, True),
    ]
    assert [r.name for r in expired_aof(records, 300)] == ["appendonly.aof.1.base.rdb"]
    records[1] = AofRecord("appendonly.aof.1.incr.aof", 1, False, 101, 199, False)
    assert [r.name for r in expired_aof(records, 300)] == ["appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof"]
    assert expired_aof(records, 150) == []  # the oldest kept instant needs base 1
    unknown = [AofRecord("appendonly.aof.1.base.rdb", 1, True, None, None, False), *records[1:]]
    assert [r.name for r in expired_aof(unknown, 300)] == ["appendonly.aof.1.incr.aof"]


def test_an_incr_file_of_a_recorded_generation_goes_with_its_base_and_only_with_it() -> None:
    """The archive recorded which generation each incr file is of: base 1's incr file, ended in the second
    of base 2, goes with base 1; base 2's, whose last #TS is before base 2's ctime (the fork fell at the end
    of a second), stays with it."""
    records = [
        AofRecord("appendonly.aof.1.base.rdb", 1, True, 100, 100, False),
        AofRecord("appendonly.aof.1.incr.aof", 1, False, 101, 200, False, "appendonly.aof.1.base.rdb"),
        AofRecord("appendonly.aof.2.base.rdb", 2, True, 200, 200, False),
        AofRecord("appendonly.aof.2.incr.aof", 2, False, 199, 199, False, "appendonly.aof.2.base.rdb"),
        AofRecord("appendonly.aof.3.base.rdb", 3, True, 300, 300, True),
        AofRecord("appendonly.aof.3.incr.aof", 3, False, 300, 350, True, "appendonly.aof.3.base.rdb"),
    ]
    assert [r.name for r in expired_aof(records, 250)] == ["appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof"]
    unknown_time = [AofRecord("appendonly.aof.1.base.rdb", 1, True, None, None, False), *records[1:]]
    assert expired_aof(unknown_time, 250) == []  # a base whose time cannot be read stays, its incr with it
    assert {r.name for r in expired_aof(records, 320)} == {r.name for r in records[:4]}
