"""What `hadr info` shows of a Redis source: the snapshot instants it restores to, and the AOF archive's
state and lag (the windows of the AOF archive, one per generation, are aofwindows.AofWindow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hadr_backup.policy.model import RedisSource
from hadr_backup.redis.aofarchive import archived_state
from hadr_backup.redis.aoflag import AofLag, measure_lag
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.ui import plural


@dataclass(frozen=True)
class SnapshotWindow:
    """Without archived AOF a Redis source is restorable to the instants of its snapshots only."""

    instants: tuple[float, ...]
    backups: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "snapshots",
            "start": rfc3339(self.instants[0]),
            "end": rfc3339(self.instants[-1]),
            "instants": [rfc3339(t) for t in self.instants],
            "backups": list(self.backups),
        }

    def describe(self) -> str:
        return (
            f"snapshot instants only: the instants of its {plural(len(self.instants), 'snapshot')}, "
            f"{format_time(self.instants[0])} .. {format_time(self.instants[-1])}"
        )


@dataclass(frozen=True)
class AofArchiveStatus:
    """What `hadr archive redis` stored (the windows it restores to are AofWindows)."""

    files: int
    archived_bytes: int
    updated_at: float | None
    lag: AofLag

    @classmethod
    def of(cls, repo, source: RedisSource, now: float) -> AofArchiveStatus | None:
        state = archived_state(repo, source.name)
        if state is None:
            return None
        files = state.get("files", {})
        lag = measure_lag(repo, source, state, now)
        return cls(len(files), sum(f["archived"] for f in files.values()), state.get("updated_at"), lag)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "redis-aof",
            "files": self.files,
            "archived_bytes": self.archived_bytes,
            "updated_at": rfc3339(self.updated_at),
            "last_piece_at": rfc3339(self.lag.last_piece_at),
            "lag_bytes": self.lag.bytes,
            "lag_seconds": self.lag.seconds,
            "lag_basis": self.lag.basis,
        }

    def summary(self) -> str:
        lag = self.lag
        behind = "unknown" if lag.bytes is None else f"{lag.bytes} bytes"
        if lag.seconds is not None:
            behind += f", oldest unarchived write {lag.seconds:.0f} s old"
        last = format_time(lag.last_piece_at) if lag.last_piece_at else "-"
        return (
            f"AOF archive: {plural(self.files, 'file')}, {self.archived_bytes} bytes, last piece {last}\n"
            f"AOF archive lag: {behind} ({lag.basis})"
        )
