"""Where the history of a bucket comes from for a restore: the source's own versions, or the mirror.

Both give the same things: the window a target time must fall in, the records in key order (each key's
newest first) for ``versions.state_at``, a record's content, and its SHA-256. Only the source can be
copied from server-side (``copy_source``); the mirror's content is streamed out of the repository or
the mirror bucket, verified against the SHA-256 its manifest recorded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hadr_backup.errors import TargetUnreachable, UsageError
from hadr_backup.objectstore import KIND
from hadr_backup.objectstore.client import call, guarded
from hadr_backup.objectstore.versions import VersionRecord, list_versions, state_at
from hadr_backup.policy.model import BucketSource
from hadr_backup.repo.catalog import COMPLETE
from hadr_backup.timefmt import format_time, rfc3339

READ_SIZE = 1 << 20
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


class SourceHistory:
    """The source bucket's own versions (ListObjectVersions), read at the source."""

    origin = "source"

    def __init__(self, client, source: BucketSource, bucket: str):
        self.client, self.source, self.bucket = client, source, bucket

    def records(self) -> Iterator[VersionRecord]:
        return guarded(self.source, self.bucket, list_versions(self.client, self.bucket))

    def window(self, listing_started: float) -> Window:
        """From the oldest version still listed (or as far back as the lifecycle keeps noncurrent versions,
        if that is later) to the last whole second before the listing began: a version written later in
        that second would carry the same LastModified as one written before it."""
        end = math.floor(listing_started) - 1e-6
        try:
            oldest = min(record.last_modified for record in self.records())
        except ValueError:
            raise UsageError(f"bucket {self.bucket} has no versions: there is nothing to restore") from None
        expiry_days = noncurrent_expiry_days(self.client, self.source, self.bucket)
        if expiry_days is not None and listing_started - expiry_days * DAY > oldest:
            return Window(listing_started - expiry_days * DAY, end, "noncurrent-expiry")
        return Window(oldest, end, "oldest-version")

    def state(self, at: float) -> Iterator[VersionRecord]:
        return state_at(self.records(), at)

    def copy_source(self, record: VersionRecord) -> dict[str, str] | None:
        return {"Bucket": self.bucket, "Key": record.key, "VersionId": record.version_id}

    def open(self, record: VersionRecord) -> Iterator[bytes]:
        answer = call(
            self.source,
            self.bucket,
            record.key,
            self.client.get_object,
            Bucket=self.bucket,
            Key=record.key,
            VersionId=record.version_id,
        )
        return body_chunks(answer["Body"])

    def sha256(self, record: VersionRecord) -> str:
        return record.sha256 or sha256_of(self.open(record))


class MirrorHistory:
    """The records ``hadr backup s3`` runs stored (their manifests), and the content they point at."""

    origin = "mirror"

    def __init__(self, repo, policy, source: BucketSource, bucket: str):
        self.repo, self.policy, self.source, self.bucket = repo, policy, source, bucket

    def runs(self) -> list[Any]:
        runs = self.repo.catalog.select(kind=KIND, source=self.source.name, state=COMPLETE)
        return [entry for entry in runs if entry.consistent_at is not None]

    def window(self, listing_started: float) -> Window:
        """From the oldest complete run's listing start to the newest one's consistent_at."""
        instants = [entry.consistent_at for entry in self.runs()]
        if not instants:
            raise UsageError(
                f"the repository holds no complete `hadr backup s3` run of source {self.source.name}",
                hint=f"run `hadr backup s3 --source {self.source.name}` first",
            )
        return Window(min(instants), max(instants), "mirror-runs")

    def records(self) -> Iterator[VersionRecord]:
        from hadr_backup.objectstore.manifest import mirror_records

        return mirror_records(self.repo, self.source.name, self.bucket)

    def state(self, at: float) -> Iterator[VersionRecord]:
        return state_at(self.records(), at)

    def copy_source(self, record: VersionRecord) -> dict[str, str] | None:
        return None

    def open(self, record: VersionRecord) -> Iterator[bytes]:
        from hadr_backup.objectstore.manifest import open_content

        return open_content(self.repo, self.source, record)

    def sha256(self, record: VersionRecord) -> str:
        return record.sha256 or sha256_of(self.open(record))


def noncurrent_expiry_days(client, source: BucketSource, bucket: str) -> int | None:
    """The fewest days an enabled lifecycle rule keeps noncurrent versions; None without such a rule."""
    from botocore.exceptions import ClientError

    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return None
        raise
    days = [
        rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        for rule in rules
        if rule.get("Status") == "Enabled" and rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
    ]
    return min(days) if days else None


def body_chunks(body) -> Iterator[bytes]:
    with body:
        while chunk := body.read(READ_SIZE):
            yield chunk


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
