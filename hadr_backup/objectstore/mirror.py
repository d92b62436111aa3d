"""``hadr backup s3``: an incremental copy of a bucket source's versions, one catalog entry per run.

A run lists each bucket (streamed, page by page), merge-joins the listing with the records of the
earlier complete runs (streamed from their manifests), copies what no earlier run listed on a bounded
pool, and writes one manifest per bucket in key order. Nothing holds a bucket in memory: one key of the
listing, one of the manifests, and a bounded window of copies in flight.

The run goes through the backup lifecycle (running with a heartbeat → complete, or failed): a killed run
reads failed, its manifests are removed, and the next run copies again what it had listed; content it
stored in the repository is found by its address and not stored again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from hadr_backup.errors import BucketUnavailable
from hadr_backup.objectstore import KIND
from hadr_backup.objectstore.client import BucketClient, ListingClient, mirror_client, same_account, source_client
from hadr_backup.objectstore.copy import Copied, MirrorTarget, RepositoryTarget, SourceReader
from hadr_backup.objectstore.incremental import ordered_pool, unseen
from hadr_backup.objectstore.manifest import complete_runs, manifest_lines, mirror_records, run_manifests
from hadr_backup.objectstore.versions import PAGE_SIZE, list_versions
from hadr_backup.policy.model import BucketSource, Policy
from hadr_backup.progress import shown_by
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import StoredObject
from hadr_backup.repo.lock import CLOCK_MARGIN
from hadr_backup.repo.repository import open_repo
from hadr_backup.timefmt import format_time, rfc3339
from hadr_backup.ui import plural

WINDOW_PER_WORKER = 4  # copies taken from the listing and not yet in the manifest, per worker
NOTES_SHOWN = 5
PROGRESS_EVERY = 1000  # listed records between progress updates when nothing is copied


@dataclass
class BucketRun:
    """What one run did with one bucket."""

    records: int = 0  # records listed
    new: int = 0  # records no earlier run listed: this run's manifest
    bytes: int = 0  # bytes of the new versions' content
    written: int = 0  # bytes written to the target (content already stored is not written again)
    skipped: int = 0  # versions deleted between the listing and their copy
    notes: list[str] = field(default_factory=list)

    def add(self, copied: Copied) -> None:
        if copied.record is None:
            self.skipped += 1
            self.notes.append(copied.note)
            return
        self.new += 1
        self.bytes += copied.read
        self.written += copied.written

    def to_meta(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "notes"}


@dataclass
class S3BackupResult:
    backup_id: str
    source: str
    state: str
    mode: str
    parent: str | None
    consistent_at: float
    buckets: dict[str, BucketRun]
    mirror: dict[str, Any] | None
    stored_size: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "buckets"},
            "consistent_at": rfc3339(self.consistent_at),
            "buckets": {name: run.to_meta() for name, run in self.buckets.items()},
        }

    def render(self, out) -> None:
        target = "the repository" if self.mirror is None else f"s3://{self.mirror['bucket']}/{self.mirror['prefix']}"
        out.kv(
            [
                ("backup", self.backup_id),
                ("source", self.source),
                ("state", self.state),
                ("into", target + (f" (incremental on {self.parent})" if self.parent else " (first run)")),
                ("consistent at", f"{format_time(self.consistent_at)} (to the second)"),
                ("took", f"{self.seconds:.1f} s"),
            ]
        )
        rows = [(name, run.records, run.new, run.bytes, run.written, run.skipped) for name, run in self.buckets.items()]
        out.table("buckets", ["bucket", "listed", "new", "new bytes", "written", "skipped"], rows)
        for warning in self.warnings:
            out.line(f"warning: {warning}")


def run_backup_s3(
    policy: Policy, source_name: str | None = None, ui=None, *, page_size: int = PAGE_SIZE
) -> S3BackupResult:
    """Copy what is new in every bucket of a bucket source since its last complete run."""
    source = policy.sources.buckets_named(source_name)
    client = source_client(source, policy.sources.buckets.index(source))
    began = time.monotonic()
    # 1. prove every bucket (and the mirror) usable before anything is recorded
    for bucket in source.buckets:
        prove_listable(client, bucket)
    mirror = _mirror_target(source)
    with open_repo(policy, write=True) as repo:
        target = mirror or RepositoryTarget(repo)
        runs = complete_runs(repo, source.name)
        if mirror is not None and (failed := _failed_since(repo, source.name, runs)) is not None:
            mirror.adopt_since(failed.started_at - CLOCK_MARGIN)
        # 2. record the run as running (heartbeat) before anything is copied
        entry = repo.begin_backup(KIND, source.name, {"mode": target.mode})
        entry.parent = runs[-1].id if runs else None
        with repo.recording(entry):
            # 3. per bucket: listing ⋈ earlier manifests → bounded copy pool → manifest, in key order
            buckets, stored, started = {}, [], None
            for bucket in source.buckets:
                with shown_by(ui, f"backup {entry.id}: {bucket}", unit="records") as progress:
                    run, manifest, listed_at = _copy_bucket(
                        repo, entry, source, client, target, bucket, page_size, progress
                    )
                buckets[bucket], started = run, started if started is not None else listed_at
                stored.append(manifest)
            # 4. complete: the instant before the first listing began is what the run describes
            parent = list(run_manifests(runs[-1]).values()) if runs else []  # incremental on it
            repo.finish_backup(entry, stored, _meta(target, buckets), consistent_at=started, needs=parent)
    return _result(entry, target, started, buckets, time.monotonic() - began)


def _result(entry, target, started: float, buckets: dict[str, BucketRun], seconds: float) -> S3BackupResult:
    return S3BackupResult(
        backup_id=entry.id,
        source=entry.source,
        state=entry.state,
        mode=target.mode,
        parent=entry.parent,
        consistent_at=started,
        buckets=buckets,
        mirror=target.describe() or None,
        stored_size=entry.stored_size + sum(run.written for run in buckets.values()),
        seconds=seconds,
        warnings=_warnings(buckets),
    )


def _copy_bucket(repo, entry, source: BucketSource, client, target, bucket: str, page_size: int, progress):
    """One bucket: its manifest (stored), what was done, and the instant its listing began."""
    listing = ListingClient(client)
    run = BucketRun()

    def listed():
        for record in list_versions(listing, bucket, page_size=page_size):
            run.records += 1
            if run.records % PROGRESS_EVERY == 0:
                progress.update(run.records)
            yield record

    def outcomes():
        new = unseen(listed(), mirror_records(repo, source.name, bucket), current_only=source.versions == "current")
        copy = partial(target.copy, SourceReader(client, bucket))
        window = source.workers * WINDOW_PER_WORKER
        for copied in ordered_pool(new, copy, workers=source.workers, window=window, inline=_is_marker):
            run.add(copied)
            progress.update(run.records, note=_progress_note(run))
            if copied.record is not None:
                yield copied.record

    stored: StoredObject = repo.put_object(
        layout.s3_manifest(source.name, entry.id, bucket), manifest_lines(outcomes())
    )
    progress.update(run.records, note=_progress_note(run))
    return run, stored, (listing.server_time or time.time()) - 1.0


def _progress_note(run: BucketRun) -> str:
    return f"{plural(run.new, 'new record')}, {run.bytes} bytes"


def _is_marker(record) -> bool:
    return record.deleted


def _failed_since(repo, source_name: str, runs: list):
    """The oldest run of the source that failed after its newest complete one (its copies may be in the
    mirror, unrecorded); None when there is none."""
    after = runs[-1].started_at if runs else 0.0
    failed = [e for e in repo.catalog.select(kind=KIND, source=source_name, state="failed") if e.started_at > after]
    return failed[0] if failed else None


def prove_listable(client: BucketClient, bucket: str) -> None:
    """The bucket exists and these credentials may list its versions (BucketUnavailable, exit 2)."""
    client.call("list_object_versions", Bucket=bucket, MaxKeys=1)


def _mirror_target(source: BucketSource) -> MirrorTarget | None:
    """The mirror bucket, proven to exist and to be versioned; None for mode repository."""
    if source.mirror is None:
        return None
    client = mirror_client(source.mirror, source.workers, f"sources.buckets ({source.name}).mirror")
    answer = client.call("get_bucket_versioning", Bucket=source.mirror.bucket)
    if answer.get("Status") != "Enabled":
        raise BucketUnavailable(
            f"mirror bucket {source.mirror.bucket} at {client.where} is not versioned "
            f"(versioning {answer.get('Status', 'never enabled').lower()}): each source version must be one "
            "mirror version",
            hint=f"enable versioning on it (aws s3api put-bucket-versioning --bucket {source.mirror.bucket} "
            "--versioning-configuration Status=Enabled)",
        )
    if same_account(source, source.mirror):
        client = source_client(source)
    return MirrorTarget(source.mirror, client, server_side=same_account(source, source.mirror))


def _meta(target, buckets: dict[str, BucketRun]) -> dict[str, Any]:
    meta: dict[str, Any] = {"mode": target.mode, "buckets": {name: run.to_meta() for name, run in buckets.items()}}
    if target.mode == "mirror":
        meta["mirror"] = target.describe()
    return meta


def _warnings(buckets: dict[str, BucketRun]) -> list[str]:
    warnings = []
    for name, run in buckets.items():
        if run.skipped:
            shown = "; ".join(run.notes[:NOTES_SHOWN]) + ("; …" if len(run.notes) > NOTES_SHOWN else "")
            warnings.append(f"{name}: {plural(run.skipped, 'version')} deleted before copied, skipped: {shown}")
    return warnings
