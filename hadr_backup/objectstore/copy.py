"""Copying one object version: read from the source bucket and checked, then stored in the repository
(content-addressed, once per content) or in the mirror bucket (one mirror version per source version).

What was read is hashed on the way (SHA-256) and checked against what the bucket says of it: the ETag
where it is a plain MD5 (not a multipart ``-N`` one, not SSE-KMS), and the full-object checksum headers
(``x-amz-checksum-sha256``, ``-crc32``) where present. A mismatch fails the run (SourceChecksumMismatch).
Versions up to ``INLINE_MAX`` are read into memory once; larger ones stream (twice into the repository:
a first pass finds the content's address, the second stores it unless it is already there).
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import NamedTuple

from hadr_backup.errors import HadrError, ObjectExists, SourceChecksumMismatch, VersionGone
from hadr_backup.objectstore.client import BucketClient
from hadr_backup.objectstore.manifest import MIRROR, REPOSITORY, Content, MirroredRecord
from hadr_backup.objectstore.versions import VersionRecord
from hadr_backup.policy.model import BucketMirror
from hadr_backup.repo import layout

INLINE_MAX = 8 << 20
PART_SIZE = 16 << 20
READ_SIZE = 1 << 20
_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")


class Copied(NamedTuple):
    """One record's outcome: the manifest record (None: the version was gone), the bytes read, and
    the bytes written to the target (0 where the content was already there)."""

    record: MirroredRecord | None
    read: int
    written: int
    note: str = ""


def mirrored(record: VersionRecord, sha256: str | None = None, content: Content | None = None) -> MirroredRecord:
    fields = asdict(record)
    fields.pop("content", None)
    fields["sha256"] = sha256
    return MirroredRecord(**fields, content=content)


def marker(record: VersionRecord) -> Copied:
    return Copied(mirrored(record), 0, 0)


def b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


class ReadCheck:
    """Hashes what was read of one version and checks it against what its bucket said."""

    def __init__(self, where: str, record: VersionRecord, response: dict):
        etag = (response.get("ETag") or "").strip('"')
        encrypted = response.get("ServerSideEncryption") == "aws:kms" or response.get("SSECustomerAlgorithm")
        self.where, self.record = where, record
        self.sha, self.size = hashlib.sha256(), 0
        self.md5 = hashlib.md5(usedforsecurity=False) if _PLAIN_MD5.fullmatch(etag) and not encrypted else None
        self.etag = etag
        self.sha_header = _whole(response.get("ChecksumSHA256"))
        self.crc_header = _whole(response.get("ChecksumCRC32"))
        self.crc = 0

    def update(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)
        if self.crc_header is not None:
            self.crc = zlib.crc32(chunk, self.crc)

    def finish(self) -> str:
        """The SHA-256 (hex) of what was read; SourceChecksumMismatch when anything disagrees."""
        sha = self.sha.hexdigest()
        problems = []
        if self.size != self.record.size:
            problems.append(f"{self.size} bytes read, {self.record.size} listed")
        if self.md5 is not None and self.md5.hexdigest() != self.etag:
            problems.append(f"MD5 {self.md5.hexdigest()} read, ETag {self.etag}")
        if self.sha_header is not None and b64_to_hex(self.sha_header) != sha:
            problems.append(f"SHA-256 {sha} read, x-amz-checksum-sha256 {b64_to_hex(self.sha_header)}")
        if self.crc_header is not None and base64.b64encode(self.crc.to_bytes(4, "big")).decode() != self.crc_header:
            problems.append("CRC32 of what was read differs from x-amz-checksum-crc32")
        if problems:
            raise SourceChecksumMismatch(
                f"{self.where} version {self.record.version_id}: {'; '.join(problems)}",
                hint="the read was damaged on the way or the bucket's object is; run the backup again, "
                "and if it repeats look at the object in the bucket",
            )
        return sha


def _whole(checksum: str | None) -> str | None:
    """A full-object checksum header (a multipart upload's composite ``…-N`` checks nothing here)."""
    return checksum if checksum and "-" not in checksum else None


class SourceReader:
    """Reads versions of one bucket, checked (``ReadCheck``)."""

    def __init__(self, client: BucketClient, bucket: str):
        self.client, self.bucket = client, bucket

    def chunks(self, record: VersionRecord, check_sha: str | None = None) -> Iterator[bytes]:
        """The version's bytes; raises at the end when they do not check out (or, given ``check_sha``,
        are not the bytes of that SHA-256)."""
        response = self.client.call(
            "get_object", Bucket=self.bucket, Key=record.key, VersionId=record.version_id, ChecksumMode="ENABLED"
        )
        check = ReadCheck(f"s3://{self.bucket}/{record.key}", record, response)
        try:
            with response["Body"] as body:
                while chunk := body.read(READ_SIZE):
                    check.update(chunk)
                    yield chunk
        except HadrError:
            raise
        except Exception as error:
            raise self.client.translate(error, self.bucket, record.key) from error
        sha = check.finish()
        if check_sha is not None and sha != check_sha:
            raise SourceChecksumMismatch(f"s3://{self.bucket}/{record.key} changed between two reads of it")

    def read(self, record: VersionRecord) -> tuple[bytes, str]:
        """A small version whole, and its SHA-256 (read again on a transient failure midway)."""
        for attempt in range(3):
            try:
                data = b"".join(self.chunks(record))
                return data, hashlib.sha256(data).hexdigest()
            except HadrError as error:
                if attempt == 2 or isinstance(error, (VersionGone, SourceChecksumMismatch)):
                    raise
        raise AssertionError("unreachable")

    def sha256(self, record: VersionRecord) -> str:
        sha = hashlib.sha256()
        for chunk in self.chunks(record):
            sha.update(chunk)
        return sha.hexdigest()


class RepositoryTarget:
    """Versions into the repository, content-addressed by their plaintext SHA-256, each content once."""

    mode = REPOSITORY

    def __init__(self, repo):
        self.repo = repo

    def describe(self) -> dict:
        return {}

    def copy(self, reader: SourceReader, record: VersionRecord) -> Copied:
        if record.deleted:
            return marker(record)
        try:
            if record.size <= INLINE_MAX:
                data, sha = reader.read(record)
                content, written = self._store(sha, lambda: [data])
            else:
                sha = reader.sha256(record)
                content, written = self._store(sha, lambda: reader.chunks(record, check_sha=sha))
        except VersionGone:
            return Copied(None, 0, 0, f"{record.key} version {record.version_id} was deleted before it was copied")
        return Copied(mirrored(record, sha, content), record.size, written)

    def _store(self, sha: str, chunks) -> tuple[Content, int]:
        key = layout.content_object(sha)
        info = self.repo.store.stat(key)
        if info is None:
            try:
                stored = self.repo.put_object(key, chunks(), if_absent=True)
                return Content(REPOSITORY, key, stored_size=stored.stored_size), stored.stored_size
            except ObjectExists:  # another worker or run stored the same content meanwhile
                info = self.repo.store.stat(key)
        return Content(REPOSITORY, key, stored_size=info.size), 0


class MirrorTarget:
    """Versions into a versioned mirror bucket under ``<prefix><bucket>/<key>``: server-side CopyObject
    when one client reaches both buckets, else read here and written there."""

    mode = MIRROR

    def __init__(self, mirror: BucketMirror, client: BucketClient, server_side: bool):
        self.mirror, self.client, self.server_side = mirror, client, server_side

    def describe(self) -> dict:
        return {
            "bucket": self.mirror.bucket,
            "endpoint": self.mirror.endpoint,
            "prefix": self.mirror.prefix,
            "server_side_copy": self.server_side,
        }

    def key_of(self, bucket: str, key: str) -> str:
        return f"{self.mirror.prefix}{bucket}/{key}"

    def copy(self, reader: SourceReader, record: VersionRecord) -> Copied:
        if record.deleted:
            return marker(record)
        destination = self.key_of(reader.bucket, record.key)
        try:
            if self.server_side and record.size <= 5 << 30:
                version_id, sha = self._server_side(reader, record, destination)
            else:
                version_id, sha = self._through_here(reader, record, destination)
        except VersionGone:
            return Copied(None, 0, 0, f"{record.key} version {record.version_id} was deleted before it was copied")
        content = Content(MIRROR, destination, bucket=self.mirror.bucket, version_id=version_id)
        return Copied(mirrored(record, sha, content), record.size, record.size)

    def _server_side(self, reader: SourceReader, record: VersionRecord, destination: str) -> tuple[str, str]:
        source = {"Bucket": reader.bucket, "Key": record.key, "VersionId": record.version_id}
        response = self.client.call(
            "copy_object", Bucket=self.mirror.bucket, Key=destination, CopySource=source, ChecksumAlgorithm="SHA256"
        )
        result = response.get("CopyObjectResult", {})
        etag = (result.get("ETag") or "").strip('"')
        if record.etag and _PLAIN_MD5.fullmatch(record.etag) and etag != record.etag:
            raise SourceChecksumMismatch(
                f"s3://{reader.bucket}/{record.key} version {record.version_id}: the copy's ETag {etag} "
                f"is not the source's {record.etag}"
            )
        checksum = _whole(result.get("ChecksumSHA256"))  # the server hashed the copy
        sha = b64_to_hex(checksum) if checksum else reader.sha256(record)
        return self._version_of(response, destination), sha

    def _through_here(self, reader: SourceReader, record: VersionRecord, destination: str) -> tuple[str, str]:
        if record.size <= INLINE_MAX:
            data, sha = reader.read(record)
            checksum = base64.b64encode(bytes.fromhex(sha)).decode()
            response = self.client.call(
                "put_object", Bucket=self.mirror.bucket, Key=destination, Body=data, ChecksumSHA256=checksum
            )
            return self._version_of(response, destination), sha
        return self._multipart(reader, record, destination)

    def _multipart(self, reader: SourceReader, record: VersionRecord, destination: str) -> tuple[str, str]:
        bucket = self.mirror.bucket
        upload = self.client.call("create_multipart_upload", Bucket=bucket, Key=destination)["UploadId"]
        try:
            parts, sha, buffer = [], hashlib.sha256(), bytearray()
            for chunk in _with_end(reader.chunks(record)):
                if chunk is not None:
                    sha.update(chunk)
                    buffer += chunk
                if buffer and (len(buffer) >= PART_SIZE or chunk is None):
                    number = len(parts) + 1
                    answer = self.client.call(
                        "upload_part",
                        Bucket=bucket,
                        Key=destination,
                        UploadId=upload,
                        PartNumber=number,
                        Body=bytes(buffer),
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
                    buffer = bytearray()
            response = self.client.call(
                "complete_multipart_upload",
                Bucket=bucket,
                Key=destination,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            try:
                self.client.client.abort_multipart_upload(Bucket=bucket, Key=destination, UploadId=upload)
            except Exception:  # the original error matters more
                pass
            raise
        return self._version_of(response, destination), sha.hexdigest()

    def _version_of(self, response: dict, destination: str) -> str:
        version_id = response.get("VersionId")
        if not version_id or version_id == "null":
            raise HadrError(
                f"mirror bucket {self.mirror.bucket} gave no version id for {destination}: it is not versioned",
                hint=f"enable versioning on {self.mirror.bucket} (`hadr protect s3` does for sources)",
            )
        return version_id


def _with_end(chunks: Iterator[bytes]) -> Iterator[bytes | None]:
    yield from chunks
    yield None
