"""S3 driver (boto3; any S3 API: AWS, MinIO, moto). A put succeeds only on a confirmed PUT.

Small objects go up in one PutObject; larger ones stream as a multipart upload that is aborted on
any failure, so a half-written object never becomes visible. ``if_absent`` uses the conditional
write ``If-None-Match: *`` (PutObject and CompleteMultipartUpload), which is atomic on the server.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from hadr_backup.errors import (
    HadrError,
    ObjectChanged,
    ObjectExists,
    ObjectMissing,
    RepositoryError,
    StorageUnreadable,
    TransientStorageError,
)
from hadr_backup.repo.storage import Features, ObjectInfo, Versioned, started, validate_key, validate_prefix

PART_SIZE = 16 << 20
PARTS_IN_FLIGHT = 4
READ_SIZE = 1 << 20
_TRANSIENT_CODES = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
}
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


CREDENTIALS_HINT = (
    "set repository.access_key and repository.secret_key in the policy (from the environment: "
    "access_key: ${AWS_ACCESS_KEY_ID}), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or AWS_PROFILE with a credentials file, or run where an instance role applies)"
)


def make_client(
    endpoint: str | None,
    region: str,
    access_key: str | None,
    secret_key: str | None,
    *,
    pool: int = 32,
    retries: dict | None = None,
    path_style: bool = False,
):
    """A boto3 S3 client; ``retries``: botocore's own (default: 3 attempts), ``pool``: connections kept."""
    from botocore.config import Config

    config = Config(
        retries=retries or {"max_attempts": 3, "mode": "standard"},
        max_pool_connections=pool,
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"} if path_style else None,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return _session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


@functools.cache
def _session():
    """One boto3 session for the process (as ``boto3.client`` shares its default one), whose responses
    parse times with ``_timestamp``."""
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    return boto3.session.Session(botocore_session=core)


def _timestamp(value):
    """A listing carries an ISO 8601 time per object (``2024-05-01T12:00:00.000Z``): the standard library
    parses it several times faster than botocore's general parser, which was most of a long listing's
    CPU; every other form (HTTP dates, epochs, no zone) goes to botocore's parser."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


class S3Storage:
    features = Features(atomic_create=True, durable_put=True)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client=None,
        endpoint: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or make_client(endpoint, region, access_key, secret_key)
        self.endpoint = endpoint

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} ({self.endpoint})" if self.endpoint else where

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> int:
        full = self._key(key)
        stream = iter(chunks)
        first = _fill(stream, PART_SIZE)
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        if len(first) < PART_SIZE:
            self._call(key, self.client.put_object, Bucket=self.bucket, Key=full, Body=bytes(first), **condition)
            return len(first)
        return self._multipart(key, full, first, stream, condition)

    def _multipart(self, key, full, first, stream, condition) -> int:
        """Upload parts with up to PARTS_IN_FLIGHT in parallel (memory: that many parts), then complete;
        abort on any failure so that nothing half-written stays behind."""
        upload = self._call(key, self.client.create_multipart_upload, Bucket=self.bucket, Key=full)
        upload_id = upload["UploadId"]

        def send(number: int, body: bytes) -> dict:
            response = self._call(
                key,
                self.client.upload_part,
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
            return {"ETag": response["ETag"], "PartNumber": number}

        try:
            parts, size = [], 0
            with ThreadPoolExecutor(PARTS_IN_FLIGHT) as pool:
                pending: deque = deque()
                part = first
                while part:
                    pending.append(pool.submit(send, len(parts) + len(pending) + 1, bytes(part)))
                    size += len(part)
                    if len(pending) >= PARTS_IN_FLIGHT:
                        parts.append(pending.popleft().result())
                    part = _fill(stream, PART_SIZE)
                while pending:
                    parts.append(pending.popleft().result())
            self._call(
                key,
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception:  # the original error matters more; lifecycle rules clean leftovers
                pass
            raise
        return size

    def get(self, key: str) -> Iterator[bytes]:
        response = self._call(key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return _body_chunks(key, response["Body"])

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self._call(key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ObjectMissing:
            self._confirm_bucket(key)
            return None
        return ObjectInfo(key, head["ContentLength"], head["LastModified"].timestamp())

    def _confirm_bucket(self, key: str) -> None:
        """A HEAD answers 404 for a missing bucket too: a missing object is an answer only in a bucket."""
        try:
            self._call(key, self.client.head_bucket, Bucket=self.bucket)
        except ObjectMissing:
            raise StorageUnreadable(
                f"cannot look up {key}: bucket {self.bucket} does not exist at {self.endpoint or 'AWS'}",
                hint="create it, or fix repository.url",
            ) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Streamed page by page (1,000 keys a request), never collected: ListObjectsV2 returns keys
        in the order of their UTF-8 bytes, which is the protocol's key order (keys are ASCII), so the
        server's order is passed on as it is. The first page is asked for before this returns."""
        validate_prefix(prefix)
        return started(self._listed(prefix))

    def _listed(self, prefix: str) -> Iterator[ObjectInfo]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = iter(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix))
        while True:
            try:
                page = next(pages, None)
            except Exception as error:  # on any page: the listing fails, it never just ends early
                raise self._listing_failed(prefix, error) from error
            if page is None:
                return
            for item in page.get("Contents", ()):
                yield ObjectInfo(item["Key"][strip:], item["Size"], item["LastModified"].timestamp())

    def _listing_failed(self, prefix: str, error: Exception) -> RepositoryError:
        """A failed listing: TransientStorageError when a retry may help, else StorageUnreadable."""
        what = f"the listing of {prefix or 'everything'}"
        translated = self._translate(what, error)
        if isinstance(translated, TransientStorageError):
            return translated
        message = translated.message if isinstance(translated, HadrError) else f"{type(error).__name__}: {error}"
        return StorageUnreadable(
            f"cannot list {prefix or 'the repository'} in {self.describe()}: {message}",
            hint=getattr(translated, "hint", None),
        )

    def delete(self, key: str) -> None:
        self._call(key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    # -- compare-and-swap and leftovers ---------------------------------------------------------

    def get_versioned(self, key: str) -> Versioned:
        response = self._call(key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return Versioned(b"".join(_body_chunks(key, response["Body"])), response["ETag"])

    def put_if(self, key: str, data: bytes, *, token: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            response = self._call(
                key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data, **condition
            )
        except (ObjectExists, ObjectMissing):
            raise ObjectChanged(f"{key} in {self.describe()} changed since it was read") from None
        return response["ETag"]

    def delete_if(self, key: str, token: str) -> None:
        try:
            self._call(key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key), IfMatch=token)
        except (ObjectExists, ObjectMissing):
            raise ObjectChanged(f"{key} in {self.describe()} changed since it was read") from None

    def list_temporary(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Incomplete multipart uploads (a writer killed mid-upload leaves them, invisible to list)."""
        validate_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for upload in page.get("Uploads", []):
                    yield ObjectInfo(
                        upload["Key"][strip:], 0, upload["Initiated"].timestamp(), temp_id=upload["UploadId"]
                    )
        except Exception as error:
            raise self._translate(prefix or "(uploads)", error) from error

    def delete_temporary(self, info: ObjectInfo) -> None:
        try:
            self._call(
                info.key,
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self._key(info.key),
                UploadId=info.temp_id,
            )
        except ObjectMissing:  # NoSuchUpload: already gone
            return

    def _call(self, key: str, operation, **kwargs):
        try:
            return operation(**kwargs)
        except Exception as error:
            raise self._translate(key, error) from error

    def _translate(self, key: str, error: Exception) -> Exception:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if isinstance(error, NoCredentialsError):  # boto3's "Unable to locate credentials"
            return RepositoryError(f"no S3 credentials to reach {self.describe()}", hint=CREDENTIALS_HINT)

        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchUpload"):
                return ObjectMissing(f"{key} is missing from {self.describe()}")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return ObjectExists(f"{key} already exists in {self.describe()}")
            if code == "NoSuchBucket":
                return RepositoryError(
                    f"bucket {self.bucket} does not exist at {self.endpoint or 'AWS'}",
                    hint="create it, or fix repository.url",
                )
            if code in _AUTH_CODES or status == "403":
                return RepositoryError(
                    f"access to {self.describe()} was denied ({code})",
                    hint="check the S3 credentials (AWS_ACCESS_KEY_ID / policy)",
                )
            if code in _TRANSIENT_CODES or status.startswith("5"):
                return TransientStorageError(
                    f"S3 error on {key} at {self.describe()}: {code} (HTTP {status}) after retries"
                )
            return RepositoryError(f"S3 error on {key}: {code}: {error}")
        if _transient_transport_error(error):
            return TransientStorageError(
                f"cannot reach {self.describe()}: {error}", hint="is the S3 endpoint up and the address right?"
            )
        if isinstance(error, BotoCoreError):  # credentials, TLS, parameters: a retry does not help
            return RepositoryError(
                f"S3 request for {key} at {self.describe()} failed: {error}",
                hint="check the S3 settings of the repository (credentials, endpoint, TLS)",
            )
        return error


def _transient_transport_error(error: Exception) -> bool:
    """A transport failure that may pass: a refused or dropped connection, a timeout, a short read (a
    TLS certificate error is a ConnectionError too, but no retry fixes it)."""
    from botocore import exceptions

    if isinstance(error, exceptions.SSLError):
        return False
    return isinstance(error, (exceptions.ConnectionError, exceptions.HTTPClientError, exceptions.IncompleteReadError))


def _fill(stream: Iterator[bytes], size: int) -> bytearray:
    buffer = bytearray()
    for chunk in stream:
        buffer += chunk
        if len(buffer) >= size:
            break
    return buffer


def _body_chunks(key: str, body) -> Iterator[bytes]:
    from botocore.exceptions import BotoCoreError

    try:
        with body:
            while chunk := body.read(READ_SIZE):
                yield chunk
    except BotoCoreError as error:
        raise TransientStorageError(f"reading {key} failed midway: {error}") from error
