"""Which archived WAL retention may remove: what no kept backup can replay.

Recovery from a backup reads WAL forward from the segment holding its start LSN, on whichever timeline
its path takes; so every segment, ``.partial`` and ``.backup`` file whose position (log + segment, the
last 16 hexadecimal digits of the name) lies before the earliest start of a kept backup is never read
again, on any timeline. Timeline ``.history`` files (small, and the map of every timeline after them)
and the archive's identity object are never removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hadr_backup.engines import StreamObject
from hadr_backup.postgres import wal
from hadr_backup.postgres.backupmeta import PgBackupMeta
from hadr_backup.repo.catalog import BackupEntry


def position(name: str) -> str:
    """Where a segment, ``.partial`` or ``.backup`` file lies in WAL, whatever its timeline: names sort by
    log and segment number in hexadecimal, so comparing these strings compares positions."""
    return wal.segment_of(name)[8:24]


def expired_wal(archived: wal.ArchivedWal, kept_start_wals: Iterable[str]) -> list[wal.ArchivedFile]:
    """The archived files before the earliest of ``kept_start_wals`` (oldest first); none without one."""
    starts = [position(name) for name in kept_start_wals]
    if not starts:
        return []
    floor = min(starts)
    files = [*archived.all_segments(), *archived.partials, *archived.backup_histories]
    files += [f for versions in archived.conflicts.values() for f in versions[1:]]  # other contents, same name
    return sorted((f for f in files if position(f.name) < floor), key=lambda f: (position(f.name), f.name))


def kept_start_wals(kept: Sequence[BackupEntry]) -> list[str]:
    """The first WAL segment of each kept backup that has recorded one (a running backup may not yet)."""
    return [PgBackupMeta.of(entry).start_wal for entry in kept if entry.meta.get("start_wal")]


def stream_expired(repo, source: str, kept: Sequence[BackupEntry]) -> list[StreamObject]:
    names = kept_start_wals(kept)
    if not names:
        return []
    return [StreamObject(f.key, f.size) for f in expired_wal(wal.list_archived(repo, source), names)]
