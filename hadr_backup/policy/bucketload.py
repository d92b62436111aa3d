"""The ``sources.buckets[]`` entries of a policy: an S3 / MinIO source, how it is protected and mirrored.

Read with the policy loader's primitives (``load._Reader``), so that errors name the file and the field
like every other section.
"""

from __future__ import annotations

import re
from typing import Any

from hadr_backup.errors import PolicyError
from hadr_backup.policy.model import BucketMirror, BucketSource, ObjectLock

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
VERSIONS = ("all", "current")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
SOURCE_KEYS = {
    "name",
    "endpoint",
    "buckets",
    "region",
    "access_key",
    "secret_key",
    "versions",
    "noncurrent_days",
    "object_lock",
    "mirror",
    "workers",
}


def bucket_source(reader, value: Any, where: str) -> BucketSource:
    data = reader.mapping(value, where, SOURCE_KEYS)
    names = reader.strings(data, "buckets", where)
    if not names:
        raise reader.fail(f"{where}.buckets", "a non-empty list of bucket names", data.get("buckets"))
    for index, name in enumerate(names):
        _bucket_name(reader, name, f"{where}.buckets[{index}]")
    versions = reader.string(data, "versions", where, default="all")
    if versions not in VERSIONS:
        raise reader.fail(f"{where}.versions", "all or current", versions)
    return BucketSource(
        name=reader.string(data, "name", where, required=True),
        endpoint=reader.string(data, "endpoint", where),
        buckets=names,
        region=reader.string(data, "region", where, default="us-east-1"),
        access_key=reader.string(data, "access_key", where),
        secret_key=reader.string(data, "secret_key", where),
        versions=versions,
        noncurrent_days=reader.integer(data, "noncurrent_days", where, 30, 1, 36500),
        object_lock=_object_lock(reader, data.get("object_lock"), f"{where}.object_lock"),
        mirror=_mirror(reader, data.get("mirror"), f"{where}.mirror"),
        workers=reader.integer(data, "workers", where, 16, 1, 256),
    )


def _bucket_name(reader, name: str, where: str) -> str:
    if not BUCKET_NAME.fullmatch(name) or ".." in name:
        raise PolicyError(
            f"{reader.name}: {where}: {name!r} is not a valid bucket name",
            hint="3 to 63 characters: lowercase letters, digits, dots and hyphens, starting and ending "
            "with a letter or digit",
        )
    return name


def _object_lock(reader, value: Any, where: str) -> ObjectLock | None:
    if value is None:
        return None
    data = reader.mapping(value, where, {"mode", "days"})
    mode = (reader.string(data, "mode", where, default="GOVERNANCE") or "").upper()
    if mode not in LOCK_MODES:
        raise reader.fail(f"{where}.mode", "GOVERNANCE or COMPLIANCE", data.get("mode"))
    return ObjectLock(mode=mode, days=reader.integer(data, "days", where, 7, 1, 36500))


def _mirror(reader, value: Any, where: str) -> BucketMirror | None:
    if value is None:
        return None
    data = reader.mapping(value, where, {"bucket", "endpoint", "prefix", "region", "access_key", "secret_key"})
    bucket = _bucket_name(reader, reader.string(data, "bucket", where, required=True), f"{where}.bucket")
    prefix = (reader.string(data, "prefix", where) or "").strip("/")
    return BucketMirror(
        bucket=bucket,
        endpoint=reader.string(data, "endpoint", where),
        prefix=f"{prefix}/" if prefix else "",
        region=reader.string(data, "region", where, default="us-east-1"),
        access_key=reader.string(data, "access_key", where),
        secret_key=reader.string(data, "secret_key", where),
    )
