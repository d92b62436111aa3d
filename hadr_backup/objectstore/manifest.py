"""Manifests of `hadr backup s3` runs: what each run saw first, and where the bytes of each version are.

One manifest per bucket per run, stored through the pipeline (compressed, encrypted) at
``layout.s3_manifest(source, run_id, bucket)``: JSON lines in the order ``list_versions`` yields (key
order, each key's newest first), one per record no earlier complete run listed — ``VersionRecord.to_json()``
plus ``content``, where its bytes are:

    {"kind": "repository", "key": "content/ab/ab12…", "stored_size": 1234}       content-addressed, shared
    {"kind": "mirror", "bucket": "b", "key": "prefix/key", "version_id": "…"}    a version of the mirror

Delete markers have no content. ``merge_runs`` over every complete run of a source (oldest first) gives
the bucket's whole history; ``mirror_records`` is that stream, and ``open_content`` the bytes of one
record, verified against its SHA-256 as they stream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from hadr_backup.errors import ChecksumMismatch, UsageError
from hadr_backup.objectstore import KIND
from hadr_backup.objectstore.versions import VersionRecord, merge_runs
from hadr_backup.policy.model import BucketSource, Policy
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry

REPOSITORY, MIRROR = "repository", "mirror"
_BATCH = 256 << 10  # bytes of JSON lines handed to the pipeline at a time


@dataclass(frozen=True)
class Content:
    """Where the bytes of one version are: a repository object, or a version in the mirror bucket."""

    kind: str  # repository | mirror
    key: str
    stored_size: int | None = None  # repository: the stored (compressed, encrypted) object's size
    bucket: str | None = None  # mirror
    version_id: str | None = None  # mirror

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Content:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class MirroredRecord(VersionRecord):
    """A VersionRecord as a manifest holds it: with its SHA-256 and where its content is."""

    content: Content | None = None  # None for a delete marker

    def to_json(self) -> dict[str, Any]:
        data = VersionRecord.to_json(self)
        data.pop("content", None)
        if self.content is not None:
            data["content"] = self.content.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MirroredRecord:
        fields = {k: data[k] for k in VersionRecord.__dataclass_fields__ if k in data}
        content = data.get("content")
        return cls(**fields, content=Content.from_json(content) if content else None)


# -- writing ----------------------------------------------------------------------------------------


def manifest_lines(records: Iterable[MirroredRecord]) -> Iterator[bytes]:
    """``records`` as JSON lines, in batches for the pipeline."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        line = json.dumps(record.to_json(), separators=(",", ":")).encode() + b"\n"
        batch.append(line)
        size += len(line)
        if size >= _BATCH:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


# -- reading ----------------------------------------------------------------------------------------


def complete_runs(repo, source_name: str, upto: float | None = None) -> list[BackupEntry]:
    """The complete runs of ``source_name``, oldest first; with ``upto``, those whose listing started at
    or before it."""
    runs = [
        entry
        for entry in repo.catalog.select(kind=KIND, source=source_name, state="complete")
        if upto is None or (entry.consistent_at or entry.started_at) <= upto
    ]
    return sorted(runs, key=lambda entry: (entry.consistent_at or entry.started_at, entry.started_at))


def run_manifests(entry: BackupEntry) -> dict[str, str]:
    """bucket -> manifest key, for every bucket the run ``entry`` wrote a manifest of."""
    return {bucket: layout.s3_manifest(entry.source, entry.id, bucket) for bucket in entry.meta.get("buckets", {})}


def read_manifest(repo, key: str) -> Iterator[MirroredRecord]:
    """The records of one manifest, streamed (opened on the first ``next``)."""
    pending = b""
    for chunk in repo.read_object(key):
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line:
                yield MirroredRecord.from_json(json.loads(line))
    if pending.strip():
        yield MirroredRecord.from_json(json.loads(pending))


def mirror_records(repo, source_name: str, bucket: str, upto: float | None = None) -> Iterator[MirroredRecord]:
    """Every record the complete runs of ``source_name`` saw of ``bucket`` (the runs whose listing
    started after ``upto`` left out), merged: key order, each key's newest first, streamed."""
    keys = [run_manifests(entry).get(bucket) for entry in complete_runs(repo, source_name, upto)]
    return merge_runs([read_manifest(repo, key) for key in keys if key is not None])


def open_content(repo, policy_or_source: Policy | BucketSource, record: MirroredRecord) -> Iterator[bytes]:
    """The plaintext of ``record``'s version, verified against its SHA-256 while it streams (the last
    chunk comes only once the whole matched; ChecksumMismatch otherwise)."""
    content = record.content
    if content is None or record.deleted:
        raise UsageError(f"{record.key} version {record.version_id} is a delete marker: it has no content")
    if content.kind == REPOSITORY:
        chunks = repo.read_object(content.key)
    else:
        chunks = _mirror_chunks(_mirror_of(policy_or_source, content.bucket), content)
    return _verified(chunks, record)


def _mirror_of(policy_or_source: Policy | BucketSource, bucket: str | None):
    sources = policy_or_source.sources.buckets if isinstance(policy_or_source, Policy) else (policy_or_source,)
    for source in sources:
        if source.mirror is not None and source.mirror.bucket == bucket:
            return source.mirror
    raise UsageError(
        f"the content is in mirror bucket {bucket}, which no sources.buckets[].mirror of the policy names",
        hint="put the mirror back into the policy (its endpoint and credentials) to read from it",
    )


def _mirror_chunks(mirror, content: Content) -> Iterator[bytes]:
    from hadr_backup.objectstore.client import mirror_client

    client = mirror_client(mirror)
    response = client.call("get_object", Bucket=content.bucket, Key=content.key, VersionId=content.version_id)
    with response["Body"] as body:
        while chunk := body.read(1 << 20):
            yield chunk


def _verified(chunks: Iterable[bytes], record: MirroredRecord) -> Iterator[bytes]:
    sha, size, held = hashlib.sha256(), 0, None
    for chunk in chunks:
        if held is not None:
            yield held
        sha.update(chunk)
        size += len(chunk)
        held = chunk
    if sha.hexdigest() != record.sha256 or size != record.size:
        raise ChecksumMismatch(
            f"{record.key} version {record.version_id}: the stored content is {size} bytes with SHA-256 "
            f"{sha.hexdigest()[:16]}…, the manifest says {record.size} bytes, {str(record.sha256)[:16]}…",
            hint="run `hadr verify repo --deep`; restore from another run or the source",
        )
    if held is not None:
        yield held
