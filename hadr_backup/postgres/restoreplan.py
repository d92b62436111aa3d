"""Choosing the base backup for a recovery target and proving, before anything is written, that the
archive reaches the target.

The backup is the newest complete one whose stop point precedes the target, on a timeline the target
timeline descends from, and whose objects are all in the repository with the size the catalog recorded
(a backup that is not whole is passed over for an older one, with a note in the plan; one asked for by
id is refused: BackupNotWhole, exit 1). The proof: every segment from the backup's start to the record where recovery
will stop is archived, and that record exists — for a time target a transaction end after the
target time (PostgreSQL only checks time targets at commits and aborts), for an xid its commit or
abort, for a name the restore point, for an LSN a record at or after it, for ``--latest`` the last
whole record of the archive (restored as an LSN target, so a segment that goes missing later makes
recovery fail loudly instead of ending early). Otherwise: TargetUnreachable (exit 2) with the
restorable window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hadr_backup.errors import BackupNotWhole, HadrError, TargetUnreachable
from hadr_backup.postgres import wal
from hadr_backup.postgres.archiveview import ArchiveView, BackupPoint, describe_gap, missing_between, restorable_window
from hadr_backup.postgres.targets import IMMEDIATE, LATEST, LSN, NAME, TIME, XID, RecoveryTarget
from hadr_backup.postgres.waldecode import ABORT, COMMIT, RESTORE_POINT, WalReader, WalRecord
from hadr_backup.repo.catalog import StoredObject
from hadr_backup.timefmt import format_time, rfc3339

STAGE_KEEP = 64  # fetched segments left in the caller's cache
CLOCK_SLACK = 30.0  # seconds of clock difference tolerated between the server and the repository
BATCH = 8  # segments decoded per pg_waldump run


@dataclass
class RestorePlan:
    backup: BackupPoint
    timeline: int
    target: RecoveryTarget  # as restored: --latest resolved to the last whole record's LSN
    segments: list[str]  # archived WAL replayed from the backup's start to the stop record
    stop_record: WalRecord | None  # where recovery will stop (None: at the backup's end)
    archived: wal.ArchivedWal | None = None  # the listing the proof was made on
    notes: list[str] = field(default_factory=list)  # e.g. a newer backup passed over because it is not whole

    def to_json(self) -> dict:
        stop = self.stop_record
        return {
            "backup": self.backup.id,
            "notes": self.notes,
            "timeline": self.timeline,
            "target": self.target.to_json(),
            "wal_from": self.segments[0] if self.segments else None,
            "wal_to": self.segments[-1] if self.segments else None,
            "wal_segments": len(self.segments),
            "stops_at": None
            if stop is None
            else {
                "lsn": wal.format_lsn(stop.lsn),
                "kind": stop.kind,
                "xid": stop.xid or None,
                "time": rfc3339(stop.time),
            },
        }


def plan_restore(
    repo,
    source,
    target: RecoveryTarget,
    *,
    timeline: int | None = None,
    backup_id: str | None = None,
    wal_cache: Path | None = None,
) -> RestorePlan:
    """The restore plan for ``target`` on ``source`` (a PostgresSource), or TargetUnreachable (or
    BackupNotWhole when the backup asked for, or every one that could serve, lacks an object).

    ``wal_cache``: a directory where the segments fetched for the proof are left (verified), so
    that staging them does not fetch them again."""
    view = ArchiveView.load(repo, source.name)
    keep = STAGE_KEEP if wal_cache else 0
    with WalReader(
        repo, source.name, view.archived, source.bin_dir, view.segment_size, directory=wal_cache, keep=keep
    ) as reader:
        planner = _Planner(view, reader, target, backup_id, repo.object_problem)
        try:
            return planner.plan(timeline)
        except TargetUnreachable as refusal:
            windows = restorable_window(repo, source.name, view=view, reader=reader)
            listed = "\n".join(f"  {w.describe()}" for w in windows) or "  (none: no restorable backup)"
            raise TargetUnreachable(
                f"{refusal.message}\nrestorable window of {source.name}:\n{listed}",
                hint=refusal.hint or "choose a target inside the window",
            ) from refusal


class _Planner:
    def __init__(
        self,
        view: ArchiveView,
        reader: WalReader,
        target: RecoveryTarget,
        backup_id: str | None,
        object_problem: Callable[[StoredObject], tuple[str, str] | None],
    ):
        self.view, self.reader, self.target, self.backup_id = view, reader, target, backup_id
        self.object_problem = object_problem
        self.problems: dict[str, list[str]] = {}  # backup id -> what is missing or short, once checked

    def plan(self, timeline: int | None) -> RestorePlan:
        # 1. the timeline to follow and the backups that lie on its path
        self.timeline = timeline or max(self.view.timelines, default=1)
        try:
            self.spans = self.view.spans(self.timeline)
        except (HadrError, ValueError) as error:
            raise TargetUnreachable(f"timeline {self.timeline} cannot be followed: {error}") from error
        candidates = self._candidates()
        # 2. per target kind: the backup (the newest whole one that serves), and the record where recovery stops
        resolve = {
            TIME: self._time,
            LSN: self._lsn,
            XID: self._xid,
            NAME: self._name,
            LATEST: self._latest,
            IMMEDIATE: self._immediate,
        }[self.target.kind]
        backup, stop = resolve(candidates)
        notes = [f"backup {b} is not whole ({'; '.join(p)}); using {backup.id}" for b, p in self.problems.items() if p]
        # 3. every segment from the backup's start to that record is archived
        end = stop.lsn if stop is not None else max(backup.stop_lsn - 1, backup.start_lsn)
        missing = missing_between(self.view, self.spans, backup.start_lsn, end)
        if missing:
            raise TargetUnreachable(
                f"WAL is missing between backup {backup.id} and {self.target.describe()}: {describe_gap(missing)}"
            )
        segments = wal.segments_for_range(backup.start_lsn, end, self.spans, self.view.segment_size)
        target = replace(self.target, value=stop.lsn) if self.target.kind == LATEST and stop else self.target
        return RestorePlan(backup, self.timeline, target, segments, stop, self.view.archived, notes)

    def _candidates(self) -> list[BackupPoint]:
        on_path = self.view.backups_on(self.spans)
        if self.backup_id:
            chosen = [b for b in on_path if b.id == self.backup_id]
            if not chosen:
                known = next((b for b in self.view.backups if b.id == self.backup_id), None)
                why = (
                    f"it is on timeline {known.timeline}, not on the path of timeline {self.timeline}"
                    if known
                    else "there is no complete PostgreSQL backup with that id for this source"
                )
                raise TargetUnreachable(f"backup {self.backup_id} cannot be used: {why}")
            problems = self._not_whole(chosen[0])
            if problems:
                raise BackupNotWhole(
                    f"backup {self.backup_id} cannot be restored: {'; '.join(problems)}",
                    hint="`hadr verify repo` lists what else is damaged; restore another backup, "
                    "or leave out --backup to use the newest whole one",
                )
            return chosen
        if not on_path:
            raise TargetUnreachable(
                f"no complete backup of {self.view.source} lies on timeline {self.timeline}'s path",
                hint="take one with `hadr backup pg`",
            )
        return on_path

    def _consistent(self, backup: BackupPoint) -> list[str]:
        """The archived chain from ``backup``'s start; unreachable when it stops before the backup's end."""
        chain = self.view.chain_from(self.spans, backup.start_lsn)
        size = self.view.segment_size
        first, last_needed = backup.start_lsn // size, max(backup.stop_lsn - 1, backup.start_lsn) // size
        if first + len(chain) - 1 < last_needed:
            missing = self.view.segment_for(self.spans, first + len(chain))
            raise TargetUnreachable(
                f"backup {backup.id} cannot be made consistent: WAL segment {missing} is not archived"
            )
        return chain

    def _not_whole(self, backup: BackupPoint) -> list[str]:
        """What is missing or short among ``backup``'s objects (checked once per backup)."""
        if backup.id not in self.problems:
            found = (self.object_problem(stored) for stored in backup.entry.objects)
            self.problems[backup.id] = [problem[1] for problem in found if problem is not None]
        return self.problems[backup.id]

    def _newest_whole(self, backups: list[BackupPoint]) -> BackupPoint:
        """The newest of ``backups`` whose objects are all stored whole; BackupNotWhole when none is."""
        for backup in reversed(backups):
            if not self._not_whole(backup):
                return backup
        listed = "; ".join(f"backup {b.id}: {', '.join(self.problems[b.id])}" for b in reversed(backups))
        raise BackupNotWhole(
            f"no whole backup can serve {self.target.describe()} ({listed})",
            hint="`hadr verify repo` lists what is damaged; take a new backup with `hadr backup pg`",
        )

    def _newest_consistent(self, backups: list[BackupPoint]) -> tuple[BackupPoint, list[str]]:
        """The newest whole one of ``backups`` and its chain. (When its own WAL is missing, older
        backups cannot help: the gap lies after their start too.)"""
        backup = self._newest_whole(backups)
        return backup, self._consistent(backup)

    # -- per target kind -------------------------------------------------------------------------

    def _immediate(self, candidates: list[BackupPoint]) -> tuple[BackupPoint, None]:
        backup, _ = self._newest_consistent(candidates)
        return backup, None

    def _refuse_at_gap(self, chain: list[str]) -> None:
        """TargetUnreachable naming the gap when archived WAL goes on after the end of ``chain``."""
        newest = self.view.newest_on(self.spans)
        if newest and chain and chain[-1][8:] < newest[8:]:
            gap = self.view.segment_for(self.spans, wal.segment_number(chain[-1], self.view.segment_size) + 1)
            raise TargetUnreachable(
                f"{self.target.describe()} is beyond a gap in the archive: WAL segment {gap} "
                f"is missing, so WAL after it (up to {newest}) cannot be replayed",
                hint="restore to a target before the gap (inside the window below)",
            )

    def _latest(self, candidates: list[BackupPoint]) -> tuple[BackupPoint, WalRecord]:
        backup, chain = self._newest_consistent(candidates)
        self._refuse_at_gap(chain)
        for name in reversed(chain[-4:]):
            records = [r for r in self.reader.decode([name], everything=True).records if r.lsn >= backup.stop_lsn]
            if records:
                return backup, records[-1]
        raise TargetUnreachable(
            f"no WAL record after backup {backup.id}'s end was found in the archive",
            hint=f"restore with --backup {backup.id} alone to stop where it ends",
        )

    def _time(self, candidates: list[BackupPoint]) -> tuple[BackupPoint, WalRecord]:
        moment = self.target.value.timestamp()  # type: ignore[union-attr]
        usable = [b for b in candidates if b.stop_time <= moment]
        if not usable:
            oldest = min(candidates, key=lambda b: b.stop_time)
            raise TargetUnreachable(
                f"{self.target.describe()} is before the end of the oldest usable backup "
                f"({oldest.id} finished at {format_time(oldest.stop_time)})"
            )
        backup, chain = self._newest_consistent(usable)
        first = self._first_after(chain, backup, moment)
        # any transaction end after the target in the (gap-free) chain proves it reachable...
        later = self._last_end_after(chain, first)
        if later is None:
            self._refuse_at_gap(chain)
            raise TargetUnreachable(
                f"no transaction ended after {self.target.describe()} in the archived WAL, so "
                f"recovery could not tell that it reached the target",
                hint="wait for the next commit to be archived, or pick an earlier time",
            )
        # ...and the first one is where recovery stops
        index = self._bisect(chain, first, later)
        found = self._scan(backup, chain, self._ends_after, start=max(index - 1, first))
        return backup, found or self._ends_in(chain[later])[0]

    def _ends_after(self, record: WalRecord) -> bool:
        if record.kind not in (COMMIT, ABORT) or record.time is None:
            return False
        when = record.time
        return when > self.target.value if self.target.inclusive else when >= self.target.value  # type: ignore

    def _ends_in(self, name: str) -> list[WalRecord]:
        return [r for r in self.reader.decode([name]).records if r.kind in (COMMIT, ABORT)]

    def _last_end_after(self, chain: list[str], first: int) -> int | None:
        """Index of the newest segment holding a transaction end after the target (walking back from
        the end of the chain to the newest segment with any transaction end)."""
        for index in range(len(chain) - 1, first - 1, -1):
            ends = self._ends_in(chain[index])
            if ends:
                return index if any(self._ends_after(r) for r in ends) else None
        return None

    def _bisect(self, chain: list[str], low: int, high: int) -> int:
        """The first segment in [low, high] holding a transaction end after the target, assuming commit
        times grow along WAL (the caller rescans the segment before, for near-ties between backends)."""
        while low < high:
            middle = (low + high) // 2
            ends = self._ends_in(chain[middle])
            if any(self._ends_after(r) for r in ends):
                high = middle
            elif ends:
                low = middle + 1
            else:
                return low  # a segment without transaction ends says nothing: scan from ``low``
        return low

    def _first_after(self, chain: list[str], backup: BackupPoint, moment: float) -> int:
        """Index in ``chain`` of the first segment that may hold records after ``moment``: a segment is
        archived only after its last record was written, so earlier ones hold nothing later."""
        first = backup.stop_lsn // self.view.segment_size - backup.start_lsn // self.view.segment_size
        for index in range(first, len(chain)):
            if self.view.mtime(chain[index]) >= moment - CLOCK_SLACK:
                return index
        return len(chain)

    def _lsn(self, candidates: list[BackupPoint]) -> tuple[BackupPoint, WalRecord]:
        lsn = int(self.target.value)  # type: ignore[arg-type]
        usable = [b for b in candidates if b.stop_lsn <= lsn]
        if not usable:
            raise TargetUnreachable(
                f"{self.target.describe()} is before the end of every usable backup "
                f"(the oldest ends at {wal.format_lsn(candidates[0].stop_lsn)})"
            )
        backup, chain = self._newest_consistent(usable)
        start = lsn // self.view.segment_size - backup.start_lsn // self.view.segment_size
        found = self._scan(backup, chain, lambda r: r.lsn >= lsn, start=start, everything=True)
        if found is None:
            self._refuse_at_gap(chain)
            raise TargetUnreachable(f"the archived WAL ends before {self.target.describe()}")
        return backup, found

    def _xid(self, candidates: list[BackupPoint]) -> tuple[BackupPoint, WalRecord]:
        xid = int(self.target.value)  # type: ignore[arg-type]
        return self._search(
            candidates,
            lambda r: r.kind in (COMMIT, ABORT) and r.xid == xid,
            f"the commit or abort of transaction {xid}",
        )

    def _name(self, candidates: list[BackupPoint]) -> tuple[BackupPoint, WalRecord]:
        name = self.target.value
        return self._search(candidates, lambda r: r.kind == RESTORE_POINT and r.name == name, f"restore point {name!r}")

    def _search(self, candidates: list[BackupPoint], match, what: str) -> tuple[BackupPoint, WalRecord]:
        """Scan the archive after the oldest backup for ``match``; use the newest backup before it."""
        oldest = candidates[0]
        chain = self._consistent(oldest)
        start = oldest.stop_lsn // self.view.segment_size - oldest.start_lsn // self.view.segment_size
        found = self._scan(oldest, chain, match, start=start)
        if found is None:
            self._refuse_at_gap(chain)
            raise TargetUnreachable(f"{what} is not in the archived WAL after backup {oldest.id}")
        return self._newest_whole([b for b in candidates if b.stop_lsn <= found.lsn]), found

    def _scan(
        self, backup: BackupPoint, chain: list[str], match, *, start: int, everything: bool = False
    ) -> WalRecord | None:
        """The first record in ``chain[start:]`` after the backup's end that ``match``es."""
        index, size = max(start, 0), 2
        while index < len(chain):
            batch = _same_timeline(chain[index : index + size])
            size = min(size * 2, BATCH)
            decoded = self.reader.decode(batch, everything=everything)
            for record in decoded.records:
                if record.lsn >= backup.stop_lsn and match(record):
                    return record
            if decoded.damaged:
                raise TargetUnreachable(f"archived WAL in {batch[0]} .. {batch[-1]} cannot be read: {decoded.error}")
            self.reader.forget(batch)
            index += len(batch)
        return None


def _same_timeline(names: list[str]) -> list[str]:
    timeline = names[0][:8]
    run = []
    for name in names:
        if name[:8] != timeline:
            break
        run.append(name)
    return run
