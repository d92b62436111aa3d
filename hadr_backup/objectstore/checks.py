"""Checks of a bucket source (``hadr check``) and of what its runs stored (``hadr verify repo``).

``check_source``: the endpoint answers, the credentials may list every bucket's versions, each bucket
exists and is versioned (and the mirror bucket, when the policy names one). ``verify_source``: every
manifest reads back whole, every content object a record references exists at the size recorded (with
``--deep``: is read back and re-hashed). Content objects no complete run references are leftovers of a
killed run: a warning, reused by the next run that meets the same content.
"""

from __future__ import annotations

from collections.abc import Iterable

from hadr_backup.errors import HadrError
from hadr_backup.objectstore import KIND
from hadr_backup.objectstore.client import QUICK, mirror_client, source_client
from hadr_backup.objectstore.manifest import (
    MIRROR,
    REPOSITORY,
    MirroredRecord,
    complete_runs,
    open_content,
    read_manifest,
    run_manifests,
)
from hadr_backup.objectstore.protection import inspect_bucket
from hadr_backup.policy.model import Policy
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry
from hadr_backup.verify.findings import ERROR, OK, SKIPPED, WARNING, Report

LEFTOVERS_NAMED = 5


def check_source(policy: Policy, source_name: str) -> Report:
    """One finding per bucket and check: listable (endpoint, credentials, bucket), versioned."""
    source = policy.sources.buckets_named(source_name)
    report = Report(f"check {source.name}")
    client = source_client(source, policy.sources.buckets.index(source), QUICK)
    for bucket in source.buckets:
        try:
            client.call("list_object_versions", Bucket=bucket, MaxKeys=1)
            state = inspect_bucket(client, bucket)
        except HadrError as error:
            report.add(ERROR, "bucket-listable", bucket, error.message, error.hint or "")
            report.add(SKIPPED, "versioning-on", bucket, "the bucket cannot be read")
            continue
        report.add(OK, "bucket-listable", bucket, f"its versions can be listed at {client.where}")
        if state.versioning == "enabled":
            report.add(OK, "versioning-on", bucket, f"versioned; point-in-time window {state.window}")
        else:
            report.add(ERROR, "versioning-on", bucket, f"versioning is {state.versioning}", "run `hadr protect s3`")
    if source.mirror is not None:
        _check_mirror(source, report)
    return report


def _check_mirror(source, report: Report) -> None:
    client = mirror_client(source.mirror, source.workers)
    try:
        status = client.call("get_bucket_versioning", Bucket=source.mirror.bucket).get("Status")
    except HadrError as error:
        report.add(ERROR, "mirror-usable", source.mirror.bucket, error.message, error.hint or "")
        return
    if status == "Enabled":
        report.add(OK, "mirror-usable", source.mirror.bucket, f"versioned, at {client.where}")
    else:
        report.add(ERROR, "mirror-usable", source.mirror.bucket, "the mirror bucket is not versioned")


def verify_source(repo, source_name: str, report: Report, deep: bool) -> None:
    source = repo.policy.sources.buckets_named(source_name)
    seen: set[tuple] = set()  # content already checked (shared by records, runs and sources)
    for entry in complete_runs(repo, source_name):
        for bucket, key in run_manifests(entry).items():
            report.count("s3_manifests")
            try:
                for record in read_manifest(repo, key):
                    report.count("s3_records")
                    _check_content(repo, source, record, entry.id, report, deep, seen)
            except HadrError as error:
                report.add(ERROR, "manifest-unreadable", entry.id, f"{bucket}: {key}: {error.message}")
    if repo.policy.sources.buckets[0].name == source.name:  # the content store is shared: report it once
        _content_leftovers(repo, report)


def _check_content(repo, source, record: MirroredRecord, run_id: str, report: Report, deep: bool, seen) -> None:
    content = record.content
    if content is None:
        return
    identity = (content.kind, content.bucket, content.key, content.version_id)
    if identity in seen:
        return
    seen.add(identity)
    report.count("s3_content")
    problem = _content_problem(repo, source, record)
    if problem is None and deep:
        try:
            for _chunk in open_content(repo, source, record):
                pass
        except HadrError as error:
            problem = error.message
    if problem is not None:
        report.add(ERROR, "content-damaged", run_id, f"{record.key} version {record.version_id}: {problem}")


def _content_problem(repo, source, record: MirroredRecord) -> str | None:
    content = record.content
    try:
        if content.kind == REPOSITORY:
            info = repo.store.stat(content.key)
            size = None if info is None else info.size
            expected = content.stored_size
        else:
            client = mirror_client(source.mirror, source.workers) if content.kind == MIRROR else None
            head = client.call(
                "head_object",
                absent=frozenset({"404", "NoSuchVersion"}),
                Bucket=content.bucket,
                Key=content.key,
                VersionId=content.version_id,
            )
            size, expected = head.get("ContentLength"), record.size
    except HadrError as error:
        return f"{content.key}: {error.message}"
    if size is None:
        return f"{content.key} is missing"
    if expected is not None and size != expected:
        return f"{content.key} is {size} bytes, the manifest says {expected}"
    return None


def referenced_content(repo, entries: Iterable[BackupEntry]) -> set[str]:
    """The repository content objects the manifests of ``entries`` (s3 runs) reference: what retention
    must keep for those entries; every other object under content/ can go."""
    keys: set[str] = set()
    for entry in entries:
        if entry.kind != KIND:
            continue
        for manifest in run_manifests(entry).values():
            for record in read_manifest(repo, manifest):
                if record.content is not None and record.content.kind == REPOSITORY:
                    keys.add(record.content.key)
    return keys


def _content_leftovers(repo, report: Report) -> None:
    complete = [e for e in repo.catalog.entries if e.kind == KIND and e.complete]
    referenced = referenced_content(repo, complete)
    leftovers = [info.key for info in repo.store.list(layout.CONTENT) if info.key not in referenced]
    report.count("s3_content_objects", len(referenced))
    if leftovers:
        named = ", ".join(leftovers[:LEFTOVERS_NAMED]) + (", …" if len(leftovers) > LEFTOVERS_NAMED else "")
        report.add(
            WARNING,
            "content-leftover",
            layout.CONTENT,
            f"{len(leftovers)} content objects no complete run references ({named}): left by a run that "
            "did not finish; the next run that meets the same content reuses them",
        )
