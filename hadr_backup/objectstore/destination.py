"""Where a restore writes: a bucket (under a prefix), or the source bucket itself (in place).

``current()`` is what the destination holds now, in key order, as records; in place it is each key's
current version (so that a key already at the version of T is left alone), in a bucket the objects
under the prefix. ``write`` puts one record's content at its key: a server-side copy of the source
version when the history can name one, else the content streamed (SHA-256 sent along, so the server
refuses bytes that differ from what was read). ``delete`` is a plain delete: in a versioned bucket it
writes a delete marker, which a later restore can undo.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hadr_backup.objectstore.client import call, guarded
from hadr_backup.objectstore.history import body_chunks, sha256_of
from hadr_backup.objectstore.versions import VersionRecord, list_versions, state_at
from hadr_backup.policy.model import BucketSource

ONE_PUT = 8 << 20  # streamed content up to this size goes up in one PutObject (held in memory)
ONE_COPY = 5 << 30  # CopyObject's limit; larger versions are copied in parts
COPIED, STREAMED = "copied", "streamed"


@dataclass(frozen=True)
class Destination:
    client: Any
    source: BucketSource  # whose endpoint and credentials reach the destination
    bucket: str
    prefix: str = ""  # "" or ending in "/"
    in_place: bool = False

    def key(self, key: str) -> str:
        return self.prefix + key

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def current(self) -> Iterator[VersionRecord]:
        """What the destination holds now, in key order (keys without the prefix)."""
        if self.in_place:
            return state_at(guarded(self.source, self.bucket, list_versions(self.client, self.bucket)), math.inf)
        return self._objects()

    def _objects(self) -> Iterator[VersionRecord]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
        strip = len(self.prefix)
        for page in guarded(self.source, self.bucket, pages):
            for item in page.get("Contents", ()):
                yield VersionRecord(
                    key=item["Key"][strip:],
                    version_id="",
                    last_modified=item["LastModified"].timestamp(),
                    size=int(item["Size"]),
                    etag=(item.get("ETag") or "").strip('"') or None,
                )

    def count(self) -> int:
        return sum(1 for _record in self._objects())

    def write(self, history, record: VersionRecord) -> str:
        """Put ``record``'s content at its key -> COPIED or STREAMED."""
        target = self.key(record.key)
        copy_source = history.copy_source(record)
        if copy_source is not None:
            operation = self.client.copy if record.size > ONE_COPY else self.client.copy_object
            call(self.source, self.bucket, target, operation, CopySource=copy_source, Bucket=self.bucket, Key=target)
            return COPIED
        if record.size <= ONE_PUT:
            data = b"".join(history.open(record))
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            call(
                self.source,
                self.bucket,
                target,
                self.client.put_object,
                Bucket=self.bucket,
                Key=target,
                Body=data,
                ChecksumSHA256=checksum,
            )
        else:
            reader = ChunkReader(history.open(record))
            call(self.source, self.bucket, target, self.client.upload_fileobj, reader, self.bucket, target)
        return STREAMED

    def delete(self, key: str) -> None:
        target = self.key(key)
        call(self.source, self.bucket, target, self.client.delete_object, Bucket=self.bucket, Key=target)

    def sha256(self, key: str) -> str:
        """The SHA-256 of the key's current content, read back."""
        target = self.key(key)
        answer = call(self.source, self.bucket, target, self.client.get_object, Bucket=self.bucket, Key=target)
        return sha256_of(body_chunks(answer["Body"]))


class ChunkReader(io.RawIOBase):
    """A stream of chunks as a readable file (for a multipart upload of unknown chunking)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = chunk
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size
