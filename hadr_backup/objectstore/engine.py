"""The S3 bucket engine: how the registry (``hadr_backup.engines``) reaches bucket sources.

Each method is a thin call into the module that does the work: backup (mirror.py: incremental runs with
manifests), restore (restore.py), windows (the runs' listing instants), status (protection.py: what the
buckets' own settings keep), verify and check (checks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hadr_backup.engines import EngineContext, Needs
from hadr_backup.objectstore import KIND
from hadr_backup.objectstore.checks import check_source, verify_source
from hadr_backup.objectstore.client import QUICK, source_client
from hadr_backup.objectstore.manifest import complete_runs, run_manifests
from hadr_backup.objectstore.mirror import run_backup_s3
from hadr_backup.objectstore.protection import BucketState, inspect_quietly
from hadr_backup.policy.model import BucketSource, Policy
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.ui import plural
from hadr_backup.verify.findings import Report


@dataclass(frozen=True)
class RunsWindow:
    """A bucket source is restorable to any second from its oldest complete run's listing instant to its
    newest's (``versions: all``), or to those instants only (``versions: current``)."""

    start: float
    end: float
    runs: int
    versions: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "s3-runs",
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "runs": self.runs,
            "granularity": "second" if self.versions == "all" else "run",
        }

    def describe(self) -> str:
        span = f"{format_time(self.start)} .. {format_time(self.end)}"
        if self.versions == "all":
            return f"any second {span} (every version, {plural(self.runs, 'run')})"
        return f"the instants of its {plural(self.runs, 'run')} only (current versions), {span}"


@dataclass(frozen=True)
class BucketsStatus:
    """What each bucket's own settings keep (``hadr info``)."""

    buckets: tuple[BucketState, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "s3-protection", "buckets": [state.to_json() for state in self.buckets]}

    def summary(self) -> str:
        lines = [state.describe() for state in self.buckets]
        return "\n".join(lines + [w for state in self.buckets for w in state.warnings()])


class S3Engine:
    kind = KIND
    section = "buckets"
    title = "S3 buckets"

    def sources(self, policy: Policy) -> tuple[BucketSource, ...]:
        return policy.sources.buckets

    def backup(self, ctx: EngineContext, source_name: str | None):
        return run_backup_s3(ctx.policy, source_name, ctx.ui)

    def restore(self, ctx: EngineContext, options):
        from hadr_backup.objectstore.restore import run_restore_s3  # the restore side is its own module

        return run_restore_s3(ctx.policy, options, ctx.ui)

    def windows(self, repo, source_name: str, now: float) -> list[RunsWindow]:
        runs = complete_runs(repo, source_name)
        if not runs:
            return []
        versions = _source(repo.policy, source_name).versions
        return [RunsWindow(runs[0].consistent_at, runs[-1].consistent_at, len(runs), versions)]

    def status(self, repo, source_name: str, now: float) -> BucketsStatus:
        source = _source(repo.policy, source_name)
        client = source_client(source, backoff=QUICK)
        return BucketsStatus(tuple(inspect_quietly(client, bucket) for bucket in source.buckets))

    def describe(self, entry: BackupEntry) -> list[tuple[str, str]]:
        buckets = entry.meta.get("buckets", {})
        if not buckets:
            return []
        new = sum(b.get("new", 0) for b in buckets.values())
        size = sum(b.get("bytes", 0) for b in buckets.values())
        return [("mode", entry.meta.get("mode", "?")), ("new", f"{plural(new, 'record')}, {size} bytes")]

    def needs(self, entry: BackupEntry) -> Needs:
        """Its manifests and description; its parent's manifests (runs are incremental: a run restores
        only with every earlier run of its source). The content the manifests reference is shared by
        runs and sources: ``checks.referenced_content`` says which of it the kept entries need."""
        own = [*run_manifests(entry).values(), layout.backup_description(entry.kind, entry.source, entry.id)]
        parent = [layout.s3_manifest(entry.source, entry.parent, b) for b in entry.meta.get("buckets", {})]
        return Needs(objects=tuple(own), stream_keys=tuple(parent) if entry.parent else ())

    def meta_json(self, entry: BackupEntry) -> dict:
        return entry.meta

    def verify(self, repo, source_name: str, report: Report, deep: bool) -> None:
        verify_source(repo, source_name, report, deep)

    def check(self, ctx: EngineContext, source_name: str, timeout: float) -> Report:
        return check_source(ctx.policy, source_name)


def _source(policy: Policy, name: str) -> BucketSource:
    return policy.sources.buckets_named(name)


ENGINE = S3Engine()
