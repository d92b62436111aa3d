"""``hadr prune``: apply the retention policy to the catalog, and remove what no kept backup needs.

    with open_repo(policy, write=True) as repo:     # the repository lock, for the whole prune
        decide    apply_retention (pure) over the catalog, per source
        plan      per expired backup its objects, per source the stream objects no kept backup needs
        mark      the expired entries read ``expiring`` in the catalog (nothing restores from them now)
        delete    their objects (each backup's description first), then the stream objects
        drop      the expiring entries leave the catalog

A kill at any point leaves a repository ``hadr verify repo`` passes: an expiring entry is never read as a
backup, and the objects removed are ones no complete backup needs. The next prune finds the expiring
entries and finishes them (removing what is left is idempotent). ``--dry-run`` opens the repository
read-only and says what a prune would do.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

from hadr_backup import engines
from hadr_backup.engines import EngineContext
from hadr_backup.errors import UsageError
from hadr_backup.policy.retention import Decision, apply_retention, backup_instant
from hadr_backup.repo.catalog import COMPLETE, EXPIRING, FAILED, Catalog
from hadr_backup.repo.pruneplan import PrunePlan, plan_prune
from hadr_backup.repo.repository import Repository, open_repo
from hadr_backup.timefmt import human_size, rfc3339, short
from hadr_backup.ui import plural

# tests only: SIGKILL this process at a step ("marked", "deleted:<n>", "stream:<n>")
KILL_AT_ENV = "HADR_PRUNE_KILL_AT"


@dataclass
class PruneResult:
    dry_run: bool
    source: str | None
    now: float
    decisions: list[Decision] = field(default_factory=list)
    plan: PrunePlan = field(default_factory=PrunePlan)
    removed_objects: int = 0  # done (or, with --dry-run, that a prune would remove)
    freed_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def expired(self) -> list[str]:
        return [d.id for d in self.decisions if not d.keep]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "source": self.source,
            "now": rfc3339(self.now),
            "backups": [_decision_json(d) for d in self.decisions],
            "expired": self.expired,
            "removed_objects": self.removed_objects,
            "freed_bytes": self.freed_bytes,
            "stream": [
                {
                    "kind": kind,
                    "source": source,
                    "removed_objects": len(found),
                    "freed_bytes": sum(o.size for o in found),
                }
                for (kind, source), found in sorted(self.plan.stream.items())
            ],
            "warnings": self.warnings,
        }

    def render(self, out) -> None:
        rows = [
            (d.entry.kind, d.entry.source, d.id, short(backup_instant(d.entry)), d.entry.state,
             "keep" if d.keep else "expire", "; ".join(d.reasons))
            for d in self.decisions
        ]  # fmt: skip
        out.table("", ["kind", "source", "backup", "instant (UTC)", "state", "action", "why"], rows, key_columns=3)
        backups, objects = plural(len(self.expired), "backup"), plural(self.removed_objects, "object")
        size = human_size(self.freed_bytes)
        if self.dry_run:
            out.line(f"dry run, nothing changed: {backups} to expire; a prune would remove {objects}, {size}")
        else:
            out.line(f"{backups} expired; removed {objects}, {size}")
        for (kind, source), found in sorted(self.plan.stream.items()):
            if not found:
                continue
            size = human_size(sum(o.size for o in found))
            out.line(f"{kind} {source}: stream objects no kept backup needs: {len(found)} ({size})")
        for warning in self.warnings:
            out.line(f"warning: {warning}")


def _decision_json(decision: Decision) -> dict[str, Any]:
    entry = decision.entry
    return {
        "id": entry.id,
        "kind": entry.kind,
        "source": entry.source,
        "state": entry.state,
        "instant": rfc3339(backup_instant(entry)),
        "action": "keep" if decision.keep else "expire",
        "reasons": list(decision.reasons),
        "stored_bytes": entry.stored_size,
    }


def run_prune(ctx: EngineContext, source_name: str | None, dry_run: bool) -> PruneResult:
    """Apply ``ctx.policy.retention`` at ``ctx.clock()`` to one source (None: every source)."""
    policy = ctx.policy
    _check_source(policy, source_name)
    result = PruneResult(dry_run, source_name, ctx.clock())
    with open_repo(policy, write=not dry_run) as repo:
        # 1. decide, per source, from the catalog as it is now
        entries = [e for e in repo.catalog.entries if source_name in (None, e.source)]
        result.decisions = apply_retention(entries, policy.retention, result.now)
        # 2. plan every removal before the first one
        result.plan = plan_prune(repo, result.decisions)
        result.warnings += repo.warnings + result.plan.warnings
        result.removed_objects, result.freed_bytes = result.plan.object_count, result.plan.freed_bytes
        if dry_run or not (result.plan.expire or result.plan.object_count):
            return result
        _execute(repo, result.plan, ctx)
    return result


def _execute(repo: Repository, plan: PrunePlan, ctx: EngineContext) -> None:
    ids = {entry.id for entry in plan.expire}
    # 3. mark: from here on nothing reads them as backups
    repo.update_catalog(lambda catalog: _mark(catalog, ids))
    _kill_point("marked")
    # 4. delete: each expired backup's objects, then the stream objects no kept backup needs
    removed = 0
    for entry in plan.expire:
        for stored in plan.objects[entry.id]:
            repo.store.delete(stored.key)
            removed += 1
            _kill_point(f"deleted:{removed}")
        for info in list(repo.store.list_temporary(entry.object_prefix)):
            repo.store.delete_temporary(info)
    ctx.say(f"removed the objects of {plural(len(ids), 'expired backup')}")
    streamed = 0
    for (kind, source), found in plan.stream.items():
        if forget := getattr(engines.engine(kind), "forget_stream", None):
            forget(repo, source, [stored.key for stored in found])
        for stored in found:
            repo.store.delete(stored.key)
            streamed += 1
            _kill_point(f"stream:{streamed}")
    # 5. drop the entries whose objects are gone
    dropped = ids - set(plan.held)
    repo.update_catalog(lambda catalog: _drop(catalog, dropped))


def _mark(catalog: Catalog, ids: set[str]) -> None:
    for entry in catalog.entries:
        if entry.id in ids and entry.state in (COMPLETE, FAILED):
            entry.state = EXPIRING


def _drop(catalog: Catalog, ids: set[str]) -> None:
    catalog.entries = [e for e in catalog.entries if not (e.id in ids and e.state == EXPIRING)]


def _check_source(policy, source_name: str | None) -> None:
    if source_name is None:
        return
    names = sorted({source.name for _kind, source in engines.configured(policy)})
    if source_name not in names:
        raise UsageError(
            f"--source {source_name!r}: the policy has no source of that name",
            hint=f"known sources: {', '.join(names) or 'none'}",
        )


def _kill_point(step: str) -> None:
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
