"""``hadr restore s3``: a bucket as it was at T, written to another bucket (or prefix) or in place, and
verified.

The state at T is each key's newest record at or before T (``versions.state_at``) over the source's own
versions, or over the mirror's manifests (``--from-mirror``, or when the source bucket is gone). It is
merge-joined in key order with what the destination holds now; what differs is written on a bounded
pool (a server-side copy of the source version where there is one, else the content streamed), keys
absent at T are deleted (in place: a delete marker), and the result is verified (verifyrestore.py).
Nothing holds the bucket in memory: the listings are streamed, one key at a time.

In place, only keys whose current version is not the version of T are written, as new current
versions: every earlier version stays, so the restore is itself undone by a second restore to the
second before it began (the result says which instant).
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from hadr_backup.errors import BucketUnavailable, IntegrityError, RepositoryError, RestoreFailed, UsageError
from hadr_backup.objectstore.client import BucketClient, source_client
from hadr_backup.objectstore.destination import Destination
from hadr_backup.objectstore.history import MirrorHistory, SourceHistory
from hadr_backup.objectstore.protection import inspect_bucket
from hadr_backup.objectstore.restoreresult import Counts, S3RestoreResult
from hadr_backup.objectstore.streams import bounded_map, join_by_key
from hadr_backup.objectstore.verifyrestore import verify_restore
from hadr_backup.progress import shown_by

WRITE, DELETE, KEEP = "write", "delete", "keep"


@dataclass(frozen=True)
class S3RestoreOptions:
    bucket: str
    target_time: datetime  # aware
    source: str | None = None  # the sources.buckets entry; None: the only one
    to_bucket: str | None = None
    to_prefix: str = ""
    in_place: bool = False
    dry_run: bool = False
    from_mirror: bool = False
    force: bool = False  # write into a non-empty destination (and delete what is absent at T)
    workers: int | None = None  # concurrent requests; None: the source's workers


@dataclass(frozen=True)
class Action:
    kind: str  # WRITE | DELETE | KEEP
    key: str
    record: Any = None  # the VersionRecord of T (WRITE, KEEP)


def run_restore_s3(policy, options: S3RestoreOptions, ui=None) -> S3RestoreResult:
    """Restore ``options.bucket`` to ``options.target_time`` -> the result, verified unless a dry run."""
    started = time.time()
    at = options.target_time.timestamp()
    with ExitStack() as stack:
        # 1. the source, the bucket, and where its history comes from
        source = policy.sources.buckets_named(options.source)
        check_options(options, source)
        options = replace(options, workers=options.workers or source.workers)
        client = source_client(source, policy.sources.buckets.index(source))
        head = bucket_head(client, options.bucket)
        began = min(started, answered_at(head) or started)  # by the server's clock too: it stamps the writes
        warnings: list[str] = []
        history = open_history(stack, policy, client, source, options, warnings, exists=bool(head))
        # 2. T inside the restorable window, before anything is written
        window = history.window(began)
        window.require(at, history.origin)
        # 3. the destination: in place needs versioning; a bucket is created, and must be empty
        destination, created = prepare_destination(client, options)
        result = S3RestoreResult.begin(source.name, options, at, history.origin, destination, window, warnings)
        result.created_bucket = created
        # 4. the plan (the state at T against what the destination holds) applied, or only counted
        exists = not (options.dry_run and created)
        current = destination.current() if exists else iter(())
        actions = plan(history.state(at), current, in_place=options.in_place)
        apply(history, destination, actions, result.counts, options, ui)
        # 5. the destination verified against the state at T
        if not options.dry_run:
            with shown_by(ui, "verifying the restored objects", unit="objects") as progress:
                state = history.state(at)
                result.verification = verify_restore(history, destination, state, options.workers, progress)
        if options.in_place and not options.dry_run:
            result.undo_time = math.floor(began) - 1e-6
    result.seconds = time.time() - started
    return result


def check_options(options: S3RestoreOptions, source) -> None:
    if bool(options.to_bucket) == options.in_place:
        raise UsageError("say where to restore: --to-bucket B2 (a new or empty bucket) or --in-place")
    if options.in_place and options.to_prefix:
        raise UsageError("--to-prefix goes with --to-bucket, not with --in-place")
    if options.bucket not in source.buckets:
        raise UsageError(
            f"bucket {options.bucket} is not one of source {source.name}'s buckets",
            hint=f"its buckets: {', '.join(source.buckets)}",
        )
    if options.to_bucket == options.bucket and not options.to_prefix.strip("/"):
        raise UsageError(
            f"--to-bucket {options.bucket} is the bucket being restored",
            hint="restore into another bucket, under a --to-prefix, or use --in-place",
        )


def open_history(
    stack: ExitStack, policy, client, source, options: S3RestoreOptions, warnings: list[str], *, exists: bool
):
    """The source's versions, or the mirror when asked for or when the source bucket is gone."""
    if options.from_mirror:
        return open_mirror(stack, policy, source, options, warnings, client if exists else None)
    if exists:
        return SourceHistory(client, source, options.bucket)
    gone = f"bucket {options.bucket} does not exist at {client.where}"
    if options.in_place:
        raise BucketUnavailable(
            f"{gone}: there is nothing to restore in", hint="restore from the mirror: --to-bucket B2"
        )
    try:
        mirror = open_mirror(stack, policy, source, options, warnings)
        runs = mirror.runs()
    except RepositoryError as error:
        raise BucketUnavailable(f"{gone}, and there is no mirror to restore it from ({error.message})") from error
    if not runs:
        raise BucketUnavailable(
            f"{gone}, and the repository holds no `hadr backup s3` run of source {source.name} to restore it from",
            hint="check the bucket's name and the source's endpoint",
        )
    warnings.append(
        f"bucket {options.bucket} does not exist any more at {client.where}: restored from the mirror's manifests"
    )
    return mirror


def open_mirror(
    stack: ExitStack, policy, source, options: S3RestoreOptions, warnings: list[str], client: BucketClient | None = None
) -> MirrorHistory:
    """The mirror's history; ``client``: the source's, when its bucket exists (versions it still holds are
    copied from it)."""
    from hadr_backup.repo.repository import open_repo

    if source.versions == "current":
        warnings.append(
            f"source {source.name} mirrors current versions only: between two runs the mirror knows of no change, "
            "so the state at T is what the runs saw, not every write before T"
        )
    return MirrorHistory(stack.enter_context(open_repo(policy)), policy, source, options.bucket, client)


def prepare_destination(client: BucketClient, options: S3RestoreOptions) -> tuple[Destination, bool]:
    """The destination, checked; whether its bucket is (or, in a dry run, would be) created."""
    if options.in_place:
        if inspect_bucket(client, options.bucket).versioning != "enabled":
            raise UsageError(
                f"versioning is not enabled on bucket {options.bucket}: an in-place restore would destroy the "
                "versions it overwrites and could not be undone",
                hint="enable versioning (hadr protect s3), or restore --to-bucket",
            )
        return Destination(client, options.bucket, in_place=True), False
    prefix = options.to_prefix.strip("/") + "/" if options.to_prefix.strip("/") else ""
    destination = Destination(client, options.to_bucket, prefix)
    if not bucket_head(client, options.to_bucket):
        if not options.dry_run:
            client.call("create_bucket", Bucket=options.to_bucket)
        return destination, True
    held = destination.count()
    if held and not options.force:
        raise UsageError(
            f"{held} objects are already in {destination.describe()}",
            hint="restore into an empty bucket or prefix, or add --force to overwrite them and delete "
            "those absent at the target time",
        )
    return destination, False


def bucket_head(client: BucketClient, bucket: str) -> dict:
    """The bucket's HEAD answer; {} when it does not exist (404 with no error code: HEAD has no body)."""
    return client.call("head_bucket", absent=frozenset({"404", "NoSuchBucket", "NotFound"}), Bucket=bucket)


def answered_at(answer: dict) -> float | None:
    """The server's clock when it answered (its Date header, to the second); None without one."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date).timestamp() if date else None


def plan(state, current, *, in_place: bool):
    """The state at T against what the destination holds, key by key -> actions in key order."""
    for key, wanted, held in join_by_key(state, current, key_of=lambda record: record.key):
        if wanted is None:
            yield Action(DELETE, key)
        elif in_place and held is not None and held.version_id == wanted.version_id:
            yield Action(KEEP, key, wanted)
        else:
            yield Action(WRITE, key, wanted)


def apply(history, destination: Destination, actions, counts: Counts, options: S3RestoreOptions, ui) -> None:
    """Carry out (or in a dry run only count) the actions on a bounded pool, counting as they end."""
    phase = "counting what the restore would write" if options.dry_run else "restoring objects"
    with shown_by(ui, phase, unit="objects") as progress:
        try:
            done = bounded_map(
                lambda action: _act(history, destination, action, options.dry_run), actions, options.workers
            )
            for index, (action, outcome) in enumerate(done, 1):
                counts.add(action, outcome)
                progress.update(index)
        except Exception as error:
            if options.dry_run or not counts.changed:
                raise
            raise RestoreFailed(
                f"the restore stopped after {counts.changed} changes to {destination.describe()}: {error}",
                hint="the destination is partly restored; run the same command again (in place, or with --force)",
            ) from error


def _act(history, destination: Destination, action: Action, dry_run: bool) -> str | None:
    """One action -> COPIED/STREAMED for a write, an "unreadable: ..." note, or None."""
    if dry_run or action.kind == KEEP:
        return None
    if action.kind == DELETE:
        destination.delete(action.key)
        return None
    try:
        return destination.write(history, action.record)
    except IntegrityError as error:  # the mirror's copy is damaged: write nothing, name the key
        return f"unreadable: {error.message}"
