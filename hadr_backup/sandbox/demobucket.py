"""The demo's bucket step: objects written, overwritten and deleted in the sandbox bucket, then the bucket as
it was at an instant between those changes restored into a new bucket with ``hadr restore s3`` and verified.

The step checks the restore twice: hadr's own verification (every key's size and SHA-256 against the state at
T), and the demo's record of what each object held at T, compared with what the new bucket holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hadr_backup.timefmt import compact, format_time

PREFIX = "demo-pitr/"
OBJECTS = 20


def bucket_story(sandbox, say: Callable[[str], None]) -> dict[str, Any]:
    """Writes, the instant T, more writes; the bucket restored to T into a new bucket -> what the demo shows."""
    from hadr_backup.objectstore.protect import run_protect_s3
    from hadr_backup.objectstore.restore import S3RestoreOptions, run_restore_s3

    source = sandbox.bucket_source
    bucket, client = source.buckets[0], sandbox.s3_client()
    say(f"bucket: objects written, then overwritten and deleted in {bucket}; restore to the instant between")
    # 1. the bucket protected (versioning on, noncurrent versions kept): hadr protect s3
    protected = run_protect_s3(sandbox.policy, source.name)
    say(f"    hadr protect s3: {protected.changed} changes")
    # 2. writes, the instant T, more writes
    at_target, target = _write_story(client, bucket)
    # 3. the bucket as it was at T, into a new bucket, verified by hadr
    to_bucket = f"{bucket}-at-{compact(target).lower()}"
    when = datetime.fromtimestamp(target, UTC)
    restored = run_restore_s3(sandbox.policy, S3RestoreOptions(bucket=bucket, target_time=when, to_bucket=to_bucket))
    say(f"    {format_time(target)} restored into {to_bucket}: {restored.verification.summary()}")
    # 4. the demo's own check of its objects
    held = _objects(client, to_bucket, PREFIX)
    return {
        "bucket": bucket,
        "to_bucket": to_bucket,
        "target": restored.to_json()["target_time"],
        "objects": restored.verification.objects,
        "bytes": restored.verification.bytes,
        "mismatches": restored.verification.mismatches,
        "demo_objects_as_at_target": held == at_target,
        "passed": restored.exit_code == 0 and held == at_target,
    }


def _write_story(client, bucket: str) -> tuple[dict[str, bytes], float]:
    """Objects written, the instant T, then some overwritten and deleted and one added -> (what the demo's
    objects held at T, T). S3 stamps LastModified to the second: T falls in a second of its own."""
    _next_second()
    at_target = {f"{PREFIX}item-{n:02d}.json": f'{{"item": {n}, "v": 1}}'.encode() for n in range(OBJECTS)}
    for key, body in at_target.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    target = math.floor(time.time()) + 0.5
    _next_second()
    for n in range(0, OBJECTS, 4):
        client.put_object(Bucket=bucket, Key=f"{PREFIX}item-{n:02d}.json", Body=b'{"overwritten": true}')
        client.delete_object(Bucket=bucket, Key=f"{PREFIX}item-{n + 1:02d}.json")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}late.json", Body=b'{"late": true}')
    _next_second()
    return at_target, target


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    held = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            held[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return held


def bucket_line(story: dict[str, Any]) -> str:
    """The demo's one line about it."""
    own = "as written" if story["demo_objects_as_at_target"] else "NOT as written"
    return (
        f"{story['bucket']} as of {story['target']} restored into {story['to_bucket']}; verified: "
        f"{story['objects']} objects, {story['bytes']} bytes, {story['mismatches']} mismatches; the demo's "
        f"objects {own} at that instant"
    )


def _next_second() -> None:
    time.sleep(math.ceil(time.time()) - time.time() + 0.02)
