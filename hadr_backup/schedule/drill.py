"""The ``drill`` job: restore the newest state of every PostgreSQL and Redis source into scratch
directories with the restore commands' own functions, measure RTO and RPO, and tear it all down.

    per source: restore --latest into a scratch dir → (pg) verify files against the backup manifest,
    start, replay to the end of the archive, stop → (redis) loaded and counted by a scratch server →
    RTO: how long that took; RPO: how old the restored instant is → remove the scratch dir

A source that fails does not stop the others; the drill fails when any did. Nothing it restores is
left behind, and the restored PostgreSQL never archives (restore writes ``archive_mode=off``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.engines import EngineContext
from hadr_backup.errors import EXIT_FAILURE, EXIT_OK, HadrError
from hadr_backup.procs import prepare_dir_for_postgres, run_as_owner
from hadr_backup.timefmt import format_time, rfc3339


@dataclass
class DrillSource:
    kind: str
    source: str
    rto: float | None = None  # seconds from the start of the restore until the data was proven usable
    rpo: float | None = None  # seconds between the restored instant and the start of the drill
    reached: float | None = None
    backup_id: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "passed": self.error is None,
            "backup_id": self.backup_id,
            "reached": rfc3339(self.reached),
            "rto_seconds": None if self.rto is None else round(self.rto, 3),
            "rpo_seconds": None if self.rpo is None else round(self.rpo, 3),
            "error": self.error,
        }


@dataclass
class DrillResult:
    started_at: float
    seconds: float = 0.0
    sources: list[DrillSource] = field(default_factory=list)
    scratch: str = ""  # where the restores went; removed before the drill ends

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.sources and all(s.error is None for s in self.sources) else EXIT_FAILURE

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.exit_code == EXIT_OK,
            "started_at": rfc3339(self.started_at),
            "seconds": round(self.seconds, 3),
            "scratch": self.scratch,
            "sources": [s.to_json() for s in self.sources],
        }

    def render(self, out) -> None:
        out.line(f"drill {'PASSED' if self.exit_code == EXIT_OK else 'FAILED'} in {self.seconds:.1f} s")
        for s in self.sources:
            if s.error:
                out.line(f"  {s.kind} {s.source}: FAILED: {s.error}")
            else:
                out.line(
                    f"  {s.kind} {s.source}: RTO {s.rto:.1f} s, RPO {s.rpo:.1f} s "
                    f"(restored to {format_time(s.reached)})"
                )
        if not self.sources:
            out.line("  nothing to drill: the policy lists no PostgreSQL or Redis source")


def run_drill(ctx: EngineContext) -> DrillResult:
    began = ctx.clock()
    result = DrillResult(began)
    scratch = prepare_dir_for_postgres(tempfile.mkdtemp(prefix="hadr-drill-"))
    result.scratch = str(scratch)
    try:
        for source in ctx.policy.sources.postgres:
            result.sources.append(_timed("pg", source.name, began, lambda s=source: _drill_pg(ctx, s, scratch)))
        for source in ctx.policy.sources.redis:
            result.sources.append(_timed("redis", source.name, began, lambda s=source: _drill_redis(ctx, s, scratch)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = ctx.clock() - began
    return result


def _timed(kind: str, name: str, began: float, restore) -> DrillSource:
    """Run one source's restore -> (backup id, restored instant); its RTO and RPO, or its error."""
    drilled = DrillSource(kind, name)
    clock = time.monotonic()
    try:
        drilled.backup_id, drilled.reached = restore()
    except HadrError as error:
        drilled.error = str(error).splitlines()[0]
        return drilled
    except Exception as error:  # still one source's failure: the others are drilled
        drilled.error = f"{type(error).__name__}: {error}"
        return drilled
    drilled.rto = time.monotonic() - clock
    drilled.rpo = max(0.0, began - drilled.reached) if drilled.reached is not None else None
    return drilled


def _drill_pg(ctx: EngineContext, source, scratch: Path) -> tuple[str, float | None]:
    from hadr_backup.postgres.restore import RestoreOptions, run_restore_pg
    from hadr_backup.postgres.targets import make_target

    to = scratch / f"pg-{source.name}"
    options = RestoreOptions(to=to, target=make_target(latest=True), source=source.name, start=True, verify=True)
    try:
        restored = run_restore_pg(ctx.policy, options, ctx.ui)
    finally:
        if (to / "postmaster.pid").exists():  # started (even if recovery failed): stop it before removing it
            run_as_owner([f"{source.bin_dir}/pg_ctl", "-D", str(to), "-m", "immediate", "-w", "stop"], check=False)
    reached = restored.reached_time if restored.reached_time is not None else restored.plan.backup.stop_time
    return restored.plan.backup.id, reached


def _drill_redis(ctx: EngineContext, source, scratch: Path) -> tuple[str | None, float | None]:
    from hadr_backup.redis.restore import RedisRestoreOptions, run_restore_redis

    options = RedisRestoreOptions(to=scratch / f"redis-{source.name}", source=source.name, latest=True)
    restored = run_restore_redis(ctx.policy, options, ctx.ui)
    return restored.backup_id, restored.reached
