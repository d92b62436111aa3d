"""init, list, info: what the repository holds, as result values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hadr_backup import engines
from hadr_backup.policy.model import Policy, Schedule
from hadr_backup.repo.catalog import FAILED, BackupEntry
from hadr_backup.repo.repository import init_repo, open_repo
from hadr_backup.schedule.history import JobHistory, read_history
from hadr_backup.timefmt import human_size, rfc3339, short
from hadr_backup.ui import plural


@dataclass
class InitResult:
    location: str
    created: bool
    meta: dict
    key_created: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.location,
            "created": self.created,
            "id": self.meta.get("id"),
            "encryption": self.meta.get("encryption") or None,
            "key_created": self.key_created,
        }

    def render(self, out) -> None:
        if self.key_created:
            out.line(f"created key file {self.key_created} (mode 0600) — keep a copy outside the repository")
        verb = "created" if self.created else "exists and opens with this policy:"
        enc = self.meta.get("encryption", {})
        cipher = f"encrypted ({enc['cipher']}, data key {enc['data_key_id']})" if enc else "not encrypted"
        out.line(f"repository {verb} {self.location} — id {self.meta.get('id')}, {cipher}")


def run_init(policy: Policy, *, create_key: bool = False) -> InitResult:
    key_created = None
    if create_key:
        key_created = _create_key_if_missing(policy)
    meta, created = init_repo(policy)
    return InitResult(policy.repository.display, created, meta, key_created)


def _create_key_if_missing(policy: Policy) -> str | None:
    from pathlib import Path

    from hadr_backup.errors import UsageError
    from hadr_backup.repo.keys import create_key_file

    key_file = policy.encryption.key_file
    if not key_file:
        raise UsageError(
            "--create-key needs encryption.key_file in the policy",
            hint="add `encryption: {key_file: /path/to/hadr.key}`",
        )
    if Path(key_file).exists():
        return None
    Path(key_file).parent.mkdir(parents=True, exist_ok=True)
    create_key_file(Path(key_file))
    return key_file


def entry_row(entry: BackupEntry) -> dict[str, Any]:
    engine = engines.find(entry.kind)
    return {
        "id": entry.id,
        "kind": entry.kind,
        "source": entry.source,
        "state": entry.state,
        "started_at": rfc3339(entry.started_at),
        "stopped_at": rfc3339(entry.stopped_at),
        "raw_size": entry.raw_size,
        "stored_size": entry.stored_size,
        "objects": len(entry.objects),
        "meta": engine.meta_json(entry) if engine is not None else entry.meta,
        "error": entry.error,
    }


@dataclass
class ListResult:
    entries: list[BackupEntry]
    warnings: list[str] = field(default_factory=list)
    details: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # id -> the engine's columns

    def to_json(self) -> dict[str, Any]:
        return {"backups": [entry_row(e) for e in self.entries], "warnings": self.warnings}

    def render(self, out) -> None:
        for warning in self.warnings:
            out.line(f"warning: {warning}")
        if not self.entries:
            usable = [kind for kind in engines.KINDS if engines.find(kind) is not None]
            out.line("no backups yet — take one with " + " or ".join(f"`hadr backup {kind}`" for kind in usable))
            return
        extra = list(dict.fromkeys(column for pairs in self.details.values() for column, _ in pairs))
        rows = []
        for e in self.entries:
            detail = dict(self.details.get(e.id, []))
            rows.append(
                [
                    e.id,
                    e.kind,
                    e.source,
                    e.state,
                    short(e.started_at),
                    short(e.stopped_at),
                    human_size(e.raw_size),
                    human_size(e.stored_size),
                ]
                + [detail.get(c, "-") for c in extra]
            )
        out.table(
            "backups",
            ["id", "kind", "source", "state", "started (UTC)", "stopped (UTC)", "size", "stored", *extra],
            rows,
            key_columns=4,
        )


def run_list(policy: Policy, kind: str | None = None) -> ListResult:
    with open_repo(policy) as repo:
        entries = repo.catalog.select(kind=kind)
        details = {e.id: engine.describe(e) for e in entries if (engine := engines.find(e.kind)) is not None}
        return ListResult(entries, list(repo.warnings), details)


@dataclass
class SourceInfo:
    kind: str
    name: str
    complete: int
    failed: int
    newest: float | None
    supported: bool = True  # False: the policy lists it, and hadr has no engine for its kind yet
    windows: list[Any] = field(default_factory=list)  # the engine's windows (to_json, describe)
    status: Any = None  # the engine's own state of the source (to_json, summary), e.g. archive lag

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "supported": self.supported,
            "complete_backups": self.complete,
            "failed_backups": self.failed,
            "newest_backup": rfc3339(self.newest),
            "restorable_window": [w.to_json() for w in self.windows],
            "archive": self.status.to_json() if self.status is not None else None,
        }

    def render(self, out) -> None:
        if not self.supported:
            out.line(f"{self.kind} {self.name}: not backed up: hadr has no {engines.KINDS[self.kind][1]} engine yet")
            return
        failed = f"{self.failed} failed" if self.failed else ""
        if self.complete:
            out.line(
                f"{self.kind} {self.name}: {plural(self.complete, 'complete backup')}, newest finished "
                f"{short(self.newest)} UTC" + (f"; {failed}" if failed else "")
            )
        else:
            out.line(f"{self.kind} {self.name}: no complete backup yet" + (f" ({failed})" if failed else ""))
        for window in self.windows:
            out.line(f"  restorable: {window.describe()}")
        if self.complete and not self.windows:
            out.line(
                "  restorable: nowhere, no backup has all the WAL it needs archived (`hadr verify repo` "
                "says what is missing)"
            )
        if self.status is not None:
            for line in self.status.summary().splitlines():
                out.line(f"  {line}")


@dataclass
class InfoResult:
    location: str
    meta: dict
    sources: list[SourceInfo]
    stored_bytes: int
    warnings: list[str] = field(default_factory=list)
    schedules: list[tuple[Schedule, JobHistory | None]] = field(default_factory=list)  # with their last run

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.location,
            "id": self.meta.get("id"),
            "encryption": self.meta.get("encryption") or None,
            "stored_bytes": self.stored_bytes,
            "sources": [s.to_json() for s in self.sources],
            "schedules": [
                {"name": s.name, "job": s.job, "cron": s.cron, "last": last.to_json() if last else None}
                for s, last in self.schedules
            ],
            "warnings": self.warnings,
        }

    def render(self, out) -> None:
        enc = self.meta.get("encryption", {})
        out.kv(
            [
                ("repository", self.location),
                ("id", self.meta.get("id")),
                (
                    "encryption",
                    f"{enc.get('cipher')} (data key {enc.get('data_key_id')}, master key {enc.get('master_key_id')})"
                    if enc
                    else "none",
                ),
                ("backups stored", human_size(self.stored_bytes)),
            ]
        )
        for warning in self.warnings:
            out.line(f"warning: {warning}")
        for source in self.sources:
            out.line()
            source.render(out)
        if self.schedules:
            out.line()
        for schedule, last in self.schedules:
            out.line(f"schedule {schedule.name} ({schedule.job}, {schedule.cron}): {_last_run(last)}")


def _last_run(last: JobHistory | None) -> str:
    if last is None or last.last_start is None:
        return "never run"
    when = f"{last.last_result} {short(last.last_end or last.last_start)} UTC"
    return when + (f": {last.last_error}" if last.last_error else "")


def run_info(policy: Policy, now: float) -> InfoResult:
    with open_repo(policy) as repo:
        sources = [_source_info(repo, kind, source, now) for kind, source in engines.configured(policy)]
        stored = sum(e.stored_size for e in repo.catalog.entries if e.complete)
        history = read_history(repo)
        schedules = [(s, history.get(s.name)) for s in policy.schedules]
        return InfoResult(policy.repository.display, repo.meta, sources, stored, list(repo.warnings), schedules)


def _source_info(repo, kind: str, source, now: float) -> SourceInfo:
    """Backups of one source, and what its engine says: restorable window, archive lag."""
    entries = repo.catalog.select(kind=kind, source=source.name)
    done = [e for e in entries if e.complete]
    info = SourceInfo(
        kind,
        source.name,
        len(done),
        sum(e.state == FAILED for e in entries),
        max((e.stopped_at or 0 for e in done), default=None),
    )
    engine = engines.find(kind)
    if engine is None:
        info.supported = False
        return info
    info.windows = engine.windows(repo, source.name, now)
    info.status = engine.status(repo, source.name, now)
    return info
