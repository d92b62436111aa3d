"""Buckets with a history played in rounds of one second (S3 stamps LastModified to the second) and an
oracle of what each key held after each round; the restore command run as an operator runs it."""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hadr_backup.timefmt import rfc3339
from tests.helpers import hadr_cli, write_policy


def make_policy(path: Path, endpoint: str, *buckets: str) -> Path:
    data = {
        "repository": {"path": str(path.parent / "repo")},
        "sources": {"buckets": [{"name": "items", "endpoint": endpoint, "buckets": list(buckets)}]},
    }
    return write_policy(path, data)


def versioned_bucket(client) -> str:
    name = f"src-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def next_second() -> float:
    """Sleep into the next whole second; S3 stamps LastModified to the second."""
    time.sleep(math.ceil(time.time()) - time.time() + 0.02)
    return time.time()


def play_history(
    client, bucket: str, keys: int, rounds: int, seed: int = 8, after_round: Callable[[int], None] | None = None
) -> list[tuple[float, dict[str, bytes]]]:
    """Rounds of writes, overwrites, deletes and re-creations, one round per second and each key touched
    at most once a round -> [(an instant inside the last second of the round, {key: content})];
    ``after_round(round)`` runs between rounds (in a second of its own)."""
    rng = random.Random(seed)
    current: dict[str, bytes] = {}
    oracle = []
    names = [f"d{i % 7}/item-{i:04d}.bin" for i in range(keys)]
    with ThreadPoolExecutor(8) as pool:
        for round_ in range(rounds):
            next_second()
            changes = {}
            for name in names:
                roll = rng.random()
                if name in current and roll < 0.2:
                    changes[name] = None
                elif (name in current and roll < 0.8) or (name not in current and roll < 0.7):
                    changes[name] = f"{name} r{round_} ".encode() * rng.randint(0, 120)
            list(pool.map(lambda item: apply_change(client, bucket, *item), changes.items()))
            for name, body in changes.items():
                if body is None:
                    current.pop(name, None)
                else:
                    current[name] = body
            oracle.append((math.floor(time.time()) + 0.5, dict(current)))
            if after_round is not None:
                next_second()
                after_round(round_)
    next_second()
    return oracle


def apply_change(client, bucket: str, key: str, body: bytes | None) -> None:
    if body is None:
        client.delete_object(Bucket=bucket, Key=key)
    else:
        client.put_object(Bucket=bucket, Key=key, Body=body)


def bucket_contents(client, bucket: str, prefix: str = "") -> dict[str, bytes]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            found[item["Key"][len(prefix) :]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def restore(policy: Path, *args: str, at: float | None = None):
    words = ["--json", "restore", "s3", *args]
    if at is not None:
        words += ["--target-time", rfc3339(at)]
    done = hadr_cli(policy, *words, timeout=600)
    report = json.loads(done.stdout) if done.returncode in (0, 3) and done.stdout.strip() else None
    return done, report
