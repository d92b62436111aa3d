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

from hadr_backup.errors import HadrError, VersionGone
from hadr_backup.objectstore.client import BucketClient, ListingClient
from hadr_backup.objectstore.copy import READ_SIZE, ReadCheck
from hadr_backup.objectstore.versions import VersionRecord, list_versions, state_at

ONE_PUT = 8 << 20  # streamed content up to this size goes up in one PutObject (held in memory)
ONE_COPY = 5 << 30  # CopyObject's limit; larger versions are copied in parts
COPIED, STREAMED = "copied", "streamed"
PART_SIZE = 8 << 20


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    # parts of PART_SIZE, two in flight: a large streamed version holds about three parts in memory
    return TransferConfig(multipart_threshold=ONE_PUT, multipart_chunksize=PART_SIZE, max_concurrency=2)


@dataclass(frozen=True)
class Destination:
    client: BucketClient  # the source's: a destination is on the source's endpoint
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
            return state_at(list_versions(ListingClient(self.client), self.bucket), math.inf)
        return self._objects()

    def _objects(self) -> Iterator[VersionRecord]:
        request = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = self.client.call("list_objects_v2", **request)
            for item in page.get("Contents", ()):
                yield VersionRecord(
                    key=item["Key"][len(self.prefix) :],
                    version_id="",
                    last_modified=item["LastModified"].timestamp(),
                    size=int(item["Size"]),
                    etag=(item.get("ETag") or "").strip('"') or None,
                )
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def count(self) -> int:
        return sum(1 for _record in self._objects())

    def write(self, history, record: VersionRecord) -> str:
        """Put ``record``'s content at its key -> COPIED or STREAMED."""
        target = self.key(record.key)
        copy_source = history.copy_source(record)
        if copy_source is not None:
            try:
                self._copy(copy_source, target, record.size)
                return COPIED
            except VersionGone:
                if not history.stream_when_gone:
                    raise
        if record.size <= ONE_PUT:
            data = b"".join(history.open(record))
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            self.client.call("put_object", Bucket=self.bucket, Key=target, Body=data, ChecksumSHA256=checksum)
        else:
            stream = io.BufferedReader(ChunkReader(history.open(record)), READ_SIZE)  # read(n): n bytes, or the end
            self._raw(target, self.client.client.upload_fileobj, stream, self.bucket, target, Config=_transfer_config())
        return STREAMED

    def _copy(self, copy_source: dict[str, str], target: str, size: int) -> None:
        if size <= ONE_COPY:
            self.client.call("copy_object", CopySource=copy_source, Bucket=self.bucket, Key=target)
        else:  # in parts (boto3's managed copy)
            self._raw(target, self.client.client.copy, copy_source, self.bucket, target)

    def delete(self, key: str) -> None:
        self.client.call("delete_object", Bucket=self.bucket, Key=self.key(key))

    def sha256(self, held: VersionRecord) -> str:
        """The SHA-256 of the key's current content, read back (and its size and ETag checked)."""
        target = self.key(held.key)
        response = self.client.call("get_object", Bucket=self.bucket, Key=target, ChecksumMode="ENABLED")
        check = ReadCheck(f"s3://{self.bucket}/{target}", held, response)
        try:
            with response["Body"] as body:
                while chunk := body.read(READ_SIZE):
                    check.update(chunk)
        except Exception as error:
            raise self.client.translate(error, self.bucket, target) from error
        return check.finish()

    def _raw(self, target: str, operation, *args, **kwargs) -> None:
        """A boto3 transfer (not one request: not retried here), its failure translated."""
        try:
            operation(*args, **kwargs)
        except HadrError:
            raise
        except Exception as error:
            raise self.client.translate(error, self.bucket, target) from error


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
