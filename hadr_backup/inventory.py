"""init, list, info: what the repository holds, as result values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hadr_backup.policy.model import Policy
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.repo.repository import init_repo, open_repo
from hadr_backup.timefmt import human_size, iso, short


@dataclass
class InitResult:
    location: str
    created: bool
    meta: dict
    key_created: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.location, "created": self.created, "id": self.meta.get("id"),
                "encryption": self.meta.get("encryption", {}), "key_created": self.key_created}

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
        raise UsageError("--create-key needs encryption.key_file in the policy",
                         hint="add `encryption: {key_file: /path/to/hadr.key}`")
    if Path(key_file).exists():
        return None
    Path(key_file).parent.mkdir(parents=True, exist_ok=True)
    create_key_file(Path(key_file))
    return key_file


def entry_row(entry: BackupEntry) -> dict[str, Any]:
    return {"id": entry.id, "kind": entry.kind, "source": entry.source, "state": entry.state,
            "started_at": iso(entry.started_at), "stopped_at": iso(entry.stopped_at),
            "raw_size": entry.raw_size, "stored_size": entry.stored_size,
            "objects": len(entry.objects), "meta": entry.meta, "error": entry.error}


@dataclass
class ListResult:
    entries: list[BackupEntry]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"backups": [entry_row(e) for e in self.entries], "warnings": self.warnings}

    def render(self, out) -> None:
        for warning in self.warnings:
            out.line(f"warning: {warning}")
        if not self.entries:
            out.line("no backups yet — run `hadr backup all`")
            return
        rows = [(e.id, e.kind, e.source, e.state, short(e.started_at), short(e.stopped_at),
                 human_size(e.raw_size), human_size(e.stored_size)) for e in self.entries]
        out.table("backups", ["id", "kind", "source", "state", "started (UTC)", "stopped (UTC)",
                              "size", "stored"], rows)


def run_list(policy: Policy, kind: str | None = None) -> ListResult:
    with open_repo(policy) as repo:
        return ListResult(repo.catalog.select(kind=kind), list(repo.warnings))


@dataclass
class SourceInfo:
    kind: str
    name: str
    complete: int
    failed: int
    newest: float | None
    window: list[dict] = field(default_factory=list)
    archive: dict | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "complete_backups": self.complete,
                "failed_backups": self.failed, "newest_backup": iso(self.newest),
                "restorable_window": self.window, "archive": self.archive}


@dataclass
class InfoResult:
    location: str
    meta: dict
    sources: list[SourceInfo]
    stored_bytes: int
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.location, "id": self.meta.get("id"),
                "encryption": self.meta.get("encryption", {}), "stored_bytes": self.stored_bytes,
                "sources": [s.to_json() for s in self.sources], "warnings": self.warnings}

    def render(self, out) -> None:
        enc = self.meta.get("encryption", {})
        out.kv([("repository", self.location), ("id", self.meta.get("id")),
                ("encryption", f"{enc.get('cipher')} (data key {enc.get('data_key_id')}, "
                               f"master key {enc.get('master_key_id')})" if enc else "none"),
                ("backups stored", human_size(self.stored_bytes))])
        for warning in self.warnings:
            out.line(f"warning: {warning}")
        for source in self.sources:
            out.line()
            out.line(f"{source.kind} {source.name}: {source.complete} complete, {source.failed} failed, "
                     f"newest {short(source.newest)} UTC")
            for window in source.window:
                out.line(f"  restorable: timeline {window.get('timeline')} from {window.get('start')} "
                         f"to {window.get('end')}")
            if source.archive:
                out.line("  archive: " + describe_archive(source.archive))


def describe_archive(archive: dict) -> str:
    """One line on a WAL archive: what is stored, and how far behind the cluster it is."""
    timelines = ",".join(str(t) for t in archive.get("timelines") or []) or "-"
    text = (f"{archive.get('segments', 0)} segments (timelines {timelines}), newest "
            f"{archive.get('newest_segment') or '-'} at {short(archive.get('newest_time'))} UTC")
    if archive.get("lag_segments") is not None:
        text += (f"; lag {archive['lag_segments']} segments, {human_size(archive.get('lag_bytes'))}, "
                 f"{archive.get('lag_seconds') or 0:.0f} s")
    cluster = archive.get("cluster") or {}
    if cluster.get("failed_count"):
        text += f"; archiver failures {cluster['failed_count']} (last {cluster.get('last_failed_wal')})"
    if archive.get("cluster_error"):
        text += f"; cluster not reachable: {archive['cluster_error']}"
    if archive.get("conflicts"):
        text += f"; CONFLICTS {len(archive['conflicts'])}"
    return text


def run_info(policy: Policy, now: float) -> InfoResult:
    with open_repo(policy) as repo:
        sources = []
        for kind, configured in (("pg", policy.sources.postgres), ("redis", policy.sources.redis),
                                 ("s3", policy.sources.buckets)):
            for source in configured:
                entries = repo.catalog.select(kind=kind, source=source.name)
                done = [e for e in entries if e.complete]
                info = SourceInfo(kind, source.name, len(done), sum(e.state == "failed" for e in entries),
                                  max((e.stopped_at or 0 for e in done), default=None))
                _add_details(repo, info, source, now)
                sources.append(info)
        stored = sum(e.stored_size for e in repo.catalog.entries if e.complete)
        return InfoResult(policy.repository.display, repo.meta, sources, stored, list(repo.warnings))


def _add_details(repo, info: SourceInfo, source, now: float) -> None:
    """Per-kind details: restorable window and archive lag (PostgreSQL)."""
    if info.kind != "pg":
        return
    from hadr_backup.postgres.archive import archive_status
    from hadr_backup.verify.walchain import ArchiveView, restorable_window

    view = ArchiveView.load(repo, source.name)  # one streamed listing of the archive serves both
    info.window = [w.to_json() for w in restorable_window(repo, source.name, view=view)]
    info.archive = archive_status(repo, source, now, archived=view.archived).to_json()
