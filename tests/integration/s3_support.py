"""Buckets with a known history for the S3 backup tests: writes, overwrites, deletes and re-creates, and
the policies that point hadr at them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from hadr_backup.objectstore.versions import list_versions
from hadr_backup.procs import free_port
from hadr_backup.sandbox.servers import S3Server
from tests.helpers import local_policy_data, write_policy


def versioned_bucket(client, name: str) -> str:
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def body_of(key: str, round_: int, shared: bool = False) -> bytes:
    """Deterministic content; ``shared``: the same bytes for every key (stored once by hadr)."""
    if shared:
        return b"the same content in many versions\n" * 8
    return hashlib.sha256(f"{key}/{round_}".encode()).digest() * (1 + round_ % 5)


def write_history(client, bucket: str, keys: int, rounds: int, *, start_round: int = 0, workers: int = 8) -> int:
    """Per key and round: a write, an overwrite with shared content, or a delete (then a re-create next
    round); keys in parallel, each key's rounds in order. Returns the versions and markers written."""

    def one_key(index: int) -> int:
        key, written = f"items/{index:05d}.bin", 0
        for round_ in range(start_round, start_round + rounds):
            if (index + round_) % 4 == 3:
                client.delete_object(Bucket=bucket, Key=key)
            else:
                shared = (index + round_) % 4 == 2
                client.put_object(Bucket=bucket, Key=key, Body=body_of(key, round_, shared))
            written += 1
        return written

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one_key, range(keys)))


def bucket_policy(tmp_path: Path, endpoint: str, buckets: list[str], **source) -> Path:
    entry = {
        "name": "items",
        "endpoint": endpoint,
        "buckets": buckets,
        "access_key": "testing",
        "secret_key": "testing",
        **source,
    }
    data = {**local_policy_data(tmp_path / "repo"), "sources": {"buckets": [entry]}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_policy(tmp_path / "policy.yaml", data)


def source_records(client, bucket: str) -> list:
    return list(list_versions(client, bucket))


@contextmanager
def another_s3(log_dir: Path) -> Iterator[S3Server]:
    """An S3 endpoint of its own (moto), beside the session's; stopped on the way out."""
    server = S3Server(free_port(), log_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
