"""Where the history of a bucket comes from for a restore: the source's own versions, or the mirror.

Both give the same things: the window a target time must fall in, the records in key order (each key's
newest first) for ``versions.state_at``, a record's content, and its SHA-256. Only the source can be
copied from server-side (``copy_source``); the mirror's content is streamed out of the repository or
the mirror bucket, verified against the SHA-256 its manifest recorded (manifest.open_content).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hadr_backup.errors import TargetUnreachable, UsageError
from hadr_backup.objectstore.client import BucketClient, ListingClient
from hadr_backup.objectstore.copy import SourceReader
from hadr_backup.objectstore.manifest import complete_runs, mirror_records, open_content
from hadr_backup.objectstore.protection import inspect_bucket
from hadr_backup.objectstore.versions import VersionRecord, list_versions, state_at
from hadr_backup.policy.model import BucketSource
from hadr_backup.timefmt import format_time, rfc3339

DAY = 86400.0


@dataclass(frozen=True)
class Window:
    """Where a target time can fall (both ends included), and what bounds it."""

    start: float
    end: float
    bounded_by: str  # oldest-version | noncurrent-expiry | mirror-runs

    def to_json(self) -> dict[str, Any]:
        return {"from": rfc3339(self.start), "to": rfc3339(self.end), "bounded_by": self.bounded_by}

    def describe(self) -> str:
        return f"{format_time(self.start)} .. {format_time(self.end)} ({self.bounded_by.replace('-', ' ')})"

    def require(self, at: float, origin: str) -> None:
        """TargetUnreachable (exit 2) unless ``at`` is inside."""
        if self.start <= at <= self.end:
            return
        side = "before the oldest restorable instant" if at < self.start else "after the newest restorable instant"
        raise TargetUnreachable(
            f"--target-time {format_time(at)} is {side}: from the {origin} the bucket restores to {self.describe()}",
            hint="pick a time inside that window",
        )


def source_window(oldest: float, began: float, expiry_days: int | None) -> Window:
    """Where a bucket's own versions can restore to: from its oldest version, or from ``expiry_days`` before
    ``began`` when its lifecycle expires noncurrent versions sooner (what was current then may be gone), to
    the last whole second before ``began`` (S3 stamps LastModified to the second)."""
    end = math.floor(began) - 1e-6
    if expiry_days is not None and began - expiry_days * DAY > oldest:
        return Window(began - expiry_days * DAY, end, "noncurrent-expiry")
    return Window(oldest, end, "oldest-version")


class SourceHistory:
    """The source bucket's own versions (ListObjectVersions), read at the source."""

    origin = "source"
    stream_when_gone = False  # a version gone since it was listed fails the restore

    def __init__(self, client: BucketClient, source: BucketSource, bucket: str):
        self.client, self.source, self.bucket = client, source, bucket
        self.reader = SourceReader(client, bucket)

    def records(self, listing: ListingClient | None = None) -> Iterator[VersionRecord]:
        return list_versions(listing or ListingClient(self.client), self.bucket)

    def window(self, listing_started: float) -> Window:
        """From the oldest version still listed (or as far back as the lifecycle keeps noncurrent versions,
        if that is later) to the last whole second before the listing began (by the server's clock where it
        says; else ``listing_started``): a version written later in that second would carry the same
        LastModified as one written before it."""
        listing = ListingClient(self.client)
        try:
            oldest = min(record.last_modified for record in self.records(listing))
        except ValueError:
            raise UsageError(f"bucket {self.bucket} has no versions: there is nothing to restore") from None
        began = min(listing.server_time or listing_started, listing_started)
        return source_window(oldest, began, inspect_bucket(self.client, self.bucket).noncurrent_days)

    def state(self, at: float) -> Iterator[VersionRecord]:
        return state_at(self.records(), at)

    def copy_source(self, record: VersionRecord) -> dict[str, str] | None:
        return {"Bucket": self.bucket, "Key": record.key, "VersionId": record.version_id}

    def open(self, record: VersionRecord) -> Iterator[bytes]:
        """The version's bytes, checked against what the bucket says of them (ETag, checksums)."""
        return self.reader.chunks(record)

    def sha256(self, record: VersionRecord) -> str:
        return record.sha256 or self.reader.sha256(record)


class MirrorHistory:
    """The records ``hadr backup s3`` runs stored (their manifests), and the content they point at. While
    the source bucket exists (``source_client``), a version it still holds is copied from it server-side
    (a version id names immutable content; the verification checks it against the manifest's SHA-256),
    and one it no longer holds is streamed from the mirror."""

    origin = "mirror"
    stream_when_gone = True  # a version gone from the source is streamed from the mirror instead

    def __init__(self, repo, policy, source: BucketSource, bucket: str, source_client: BucketClient | None = None):
        self.repo, self.policy, self.source, self.bucket = repo, policy, source, bucket
        self.source_client = source_client

    def runs(self) -> list[Any]:
        return complete_runs(self.repo, self.source.name)

    def window(self, listing_started: float) -> Window:
        """From the oldest complete run's listing start to the newest one's consistent_at."""
        instants = [entry.consistent_at or entry.started_at for entry in self.runs()]
        if not instants:
            raise UsageError(
                f"the repository holds no complete `hadr backup s3` run of source {self.source.name}",
                hint=f"run `hadr backup s3 --source {self.source.name}` first",
            )
        return Window(min(instants), max(instants), "mirror-runs")

    def records(self) -> Iterator[VersionRecord]:
        return mirror_records(self.repo, self.source.name, self.bucket)

    def state(self, at: float) -> Iterator[VersionRecord]:
        return state_at(self.records(), at)

    def copy_source(self, record: VersionRecord) -> dict[str, str] | None:
        if self.source_client is None:
            return None
        return {"Bucket": self.bucket, "Key": record.key, "VersionId": record.version_id}

    def open(self, record: VersionRecord) -> Iterator[bytes]:
        return open_content(self.repo, self.policy, record)

    def sha256(self, record: VersionRecord) -> str:
        if record.sha256 is None:
            raise UsageError(f"the mirror's manifest has no SHA-256 for {record.key} version {record.version_id}")
        return record.sha256
