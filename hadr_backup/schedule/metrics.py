"""Prometheus metrics of the repository, the sources and the scheduled jobs.

``collect`` reads them from the repository (catalog, job history, each engine's restorable windows and
archive status) and the policy (schedules, RPO targets): ``hadr metrics`` prints them once (for
node_exporter's textfile collector), ``hadr schedule run --metrics-port P`` serves them on /metrics,
refreshed in the background (reading WAL and asking the cluster for its lag is not done per scrape),
with the scheduler's own ``hadr_scheduler_up`` and heartbeat. docs/alerts.yml holds the alert rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hadr_backup import engines
from hadr_backup.errors import HadrError, LocalFileError
from hadr_backup.fsutil import durable_write, os_faults_as
from hadr_backup.policy.model import Policy
from hadr_backup.repo.repository import open_repo
from hadr_backup.schedule.history import RUNNING, read_history
from hadr_backup.schedule.timing import longest_gap, next_run, trigger_for

JOB = ("schedule", "job")
SOURCE = ("kind", "source")


@dataclass
class Snapshot:
    families: list[Metric]
    errors: list[str] = field(default_factory=list)
    taken_at: float = 0.0


def _gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=list(labels))


def collect(policy: Policy, now: float) -> Snapshot:
    """Every metric hadr knows from the policy and the repository; a part that cannot be read is left
    out, said in ``errors`` and counted in ``hadr_metrics_errors``."""
    began = time.monotonic()
    snapshot = Snapshot([], taken_at=now)
    up = _gauge("hadr_repository_up", "1 when the repository could be opened and its catalog read")
    try:
        with open_repo(policy) as repo:
            up.add_metric([], 1)
            _part(snapshot, "jobs", lambda: _job_families(policy, read_history(repo), now))
            _part(snapshot, "backups", lambda: _backup_families(policy, repo))
            for kind, source in engines.configured(policy):
                if engines.find(kind) is not None:
                    _part(snapshot, f"{kind} {source.name}", lambda k=kind, s=source: _source_state(repo, k, s, now))
    except (HadrError, OSError) as error:
        up.add_metric([], 0)
        snapshot.errors.append(f"repository: {str(error).splitlines()[0]}")
    errors = _gauge("hadr_metrics_errors", "parts of the metrics that could not be read this time")
    errors.add_metric([], len(snapshot.errors))
    took = _gauge("hadr_metrics_collect_seconds", "how long reading the metrics took")
    took.add_metric([], time.monotonic() - began)
    snapshot.families[:0] = [up, errors, took]
    return _merged(snapshot)


def _part(snapshot: Snapshot, what: str, read: Callable[[], Iterable[Metric]]) -> None:
    try:
        snapshot.families.extend(read())
    except Exception as error:  # one unreadable part leaves the others
        snapshot.errors.append(f"{what}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")


def _merged(snapshot: Snapshot) -> Snapshot:
    """One family per name (each source adds its samples to a family of its own)."""
    by_name: dict[str, Metric] = {}
    for family in snapshot.families:
        if family.name in by_name:
            by_name[family.name].samples.extend(family.samples)
        else:
            by_name[family.name] = family
    snapshot.families = list(by_name.values())
    return snapshot


def _job_families(policy: Policy, history: dict, now: float) -> list[Metric]:
    families = {
        "success": _gauge("hadr_job_last_success_timestamp_seconds", "end of the job's last successful run", JOB),
        "failure": _gauge("hadr_job_last_failure_timestamp_seconds", "end of the job's last failed run", JOB),
        "duration": _gauge("hadr_job_last_duration_seconds", "how long the job's last run took", JOB),
        "running": _gauge("hadr_job_running", "1 while a run of the job is under way", JOB),
        "interval": _gauge("hadr_job_interval_seconds", "the longest time between two runs of its schedule", JOB),
        "next": _gauge("hadr_job_next_run_timestamp_seconds", "when the job runs next", JOB),
        "runs": CounterMetricFamily("hadr_job_runs", "runs of the job started", labels=list(JOB)),
        "failures": CounterMetricFamily("hadr_job_failures", "runs of the job that failed", labels=list(JOB)),
        "skipped": CounterMetricFamily(
            "hadr_job_skipped", "runs skipped: another process held the job", labels=list(JOB)
        ),
    }
    moment = datetime.fromtimestamp(now, UTC)
    for schedule in policy.schedules:
        labels = [schedule.name, schedule.job]
        trigger = trigger_for(schedule, policy)
        families["interval"].add_metric(labels, longest_gap(trigger, moment))
        if (upcoming := next_run(trigger, moment)) is not None:
            families["next"].add_metric(labels, upcoming.timestamp())
        done = history.get(schedule.name)
        families["running"].add_metric(labels, 1 if done is not None and done.last_result == RUNNING else 0)
        for key, value in (
            ("success", done and done.last_success),
            ("failure", done and done.last_failure),
            ("duration", done and done.last_duration),
        ):
            if value is not None:
                families[key].add_metric(labels, value)
        for key in ("runs", "failures", "skipped"):
            families[key].add_metric(labels, getattr(done, key, 0) if done is not None else 0)
    return list(families.values())


def _backup_families(policy: Policy, repo) -> list[Metric]:
    stored = _gauge("hadr_repository_stored_bytes", "bytes stored by the complete backups in the catalog")
    last_end = _gauge("hadr_backup_last_completed_timestamp_seconds", "end of the newest complete backup", SOURCE)
    duration = _gauge("hadr_backup_last_duration_seconds", "how long the newest complete backup took", SOURCE)
    last_bytes = _gauge("hadr_backup_last_stored_bytes", "bytes the newest complete backup stored", SOURCE)
    source_bytes = _gauge("hadr_backup_stored_bytes", "bytes all complete backups of the source store", SOURCE)
    complete = _gauge("hadr_backups_complete", "complete backups of the source in the catalog", SOURCE)
    done = [e for e in repo.catalog.entries if e.complete]
    stored.add_metric([], sum(e.stored_size for e in done))
    for kind, source in engines.configured(policy):
        mine = [e for e in done if e.kind == kind and e.source == source.name]
        labels = [kind, source.name]
        complete.add_metric(labels, len(mine))
        source_bytes.add_metric(labels, sum(e.stored_size for e in mine))
        if mine:
            newest = max(mine, key=lambda e: e.stopped_at or 0)
            last_end.add_metric(labels, newest.stopped_at or 0)
            duration.add_metric(labels, max(0.0, (newest.stopped_at or 0) - newest.started_at))
            last_bytes.add_metric(labels, newest.stored_size)
    return [stored, last_end, duration, last_bytes, source_bytes, complete]


def _source_state(repo, kind: str, source, now: float) -> list[Metric]:
    """The restorable window (so that RPO is ``time() - end``) and, for PostgreSQL, the archive lag."""
    engine = engines.engine(kind)
    labels = [kind, source.name]
    start = _gauge("hadr_restorable_window_start_timestamp_seconds", "oldest instant a restore can reach", SOURCE)
    end = _gauge("hadr_restorable_window_end_timestamp_seconds", "newest instant a restore can reach", SOURCE)
    bounds = [_instants(w.to_json()) for w in engine.windows(repo, source.name, now)]
    if starts := [b[0] for b in bounds if b[0] is not None]:
        start.add_metric(labels, min(starts))
    if ends := [b[1] for b in bounds if b[1] is not None]:
        end.add_metric(labels, max(ends))
    families: list[Metric] = [start, end]
    if kind == "pg":
        families += _archive_lag(engine.status(repo, source.name, now), source)
    return families


def _instants(window: dict) -> tuple[float | None, float | None]:
    def parsed(text: str | None) -> float | None:
        return datetime.fromisoformat(text).timestamp() if text else None

    return parsed(window.get("start")), parsed(window.get("end"))


def _archive_lag(status, source) -> list[Metric]:
    labels = [source.name]
    lag_bytes = _gauge("hadr_wal_archive_lag_bytes", "WAL written and not archived yet", ("source",))
    lag_seconds = _gauge("hadr_wal_archive_lag_seconds", "age of the oldest commit not archived yet", ("source",))
    target = _gauge("hadr_wal_archive_rpo_target_seconds", "the source's rpo in the policy", ("source",))
    target.add_metric(labels, source.rpo)
    if status is not None and status.lag_bytes is not None:
        lag_bytes.add_metric(labels, status.lag_bytes)
    if status is not None and status.lag_seconds is not None:
        lag_seconds.add_metric(labels, status.lag_seconds)
    return [lag_bytes, lag_seconds, target]


def scheduler_families(up: bool, heartbeat: float) -> list[Metric]:
    alive = _gauge("hadr_scheduler_up", "1 while hadr schedule run is scheduling jobs")
    alive.add_metric([], 1 if up else 0)
    beat = _gauge("hadr_scheduler_heartbeat_timestamp_seconds", "the scheduler's main loop last ran")
    beat.add_metric([], heartbeat)
    return [alive, beat]


class _Families:
    def __init__(self, families: Callable[[], Iterable[Metric]]):
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families()


def registry_of(families: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A registry that serves whatever ``families()`` returns at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return registry


def exposition(families: list[Metric]) -> bytes:
    """The Prometheus text format of ``families``."""
    return generate_latest(registry_of(lambda: families))


def samples_json(families: list[Metric]) -> list[dict]:
    return [
        {"name": sample.name, "labels": dict(sample.labels), "value": sample.value}
        for family in families
        for sample in family.samples
    ]


@dataclass
class MetricsResult:
    """``hadr metrics``: the exposition text (or, with --json, the samples), or where it was written."""

    snapshot: Snapshot
    output: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": samples_json(self.snapshot.families),
            "errors": self.snapshot.errors,
            "output": self.output,
        }

    def render(self, out) -> None:
        if self.output is None:
            out.stream.write(exposition(self.snapshot.families).decode())
            return
        count = len(samples_json(self.snapshot.families))
        out.line(f"wrote {count} samples to {self.output}")
        for error in self.snapshot.errors:
            out.line(f"warning: {error}")


def run_metrics(policy: Policy, now: float, output: str | None = None) -> MetricsResult:
    snapshot = collect(policy, now)
    if output is not None:
        with os_faults_as(LocalFileError, f"write {output}"):
            durable_write(output, exposition(snapshot.families), mode=0o644)
    return MetricsResult(snapshot, output)
