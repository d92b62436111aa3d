"""A boto3 client for a policy's bucket source, and what its errors mean to an operator.

The client is the repository driver's (``repo.s3.make_client``: standard retries, so a transient 500,
503 or SlowDown is retried before it surfaces). What surfaces is translated here: a missing bucket,
refused credentials or an endpoint that does not answer are the operator's to fix (exit 2); a server
error that outlived the retries may pass (TransientStorageError); a missing key or version is
ObjectMissing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from hadr_backup.errors import BucketMissing, HadrError, ObjectMissing, TransientStorageError, UsageError
from hadr_backup.policy.model import BucketSource
from hadr_backup.repo.s3 import make_client

T = TypeVar("T")
_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
_TRANSIENT = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
CREDENTIALS_HINT = "check access_key and secret_key of this entry of sources.buckets in the policy"


def bucket_client(source: BucketSource):
    """A client for the source's endpoint with the source's credentials."""
    return make_client(source.endpoint, source.region, source.access_key, source.secret_key)


def where(source: BucketSource, bucket: str, key: str | None = None) -> str:
    """``s3://bucket/key (endpoint)``: how a message names a place."""
    place = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    return f"{place} ({source.endpoint or 'AWS'})"


def call(source: BucketSource, bucket: str, key: str | None, operation: Callable[..., Any], **kwargs: Any) -> Any:
    """``operation(**kwargs)`` with its failure translated (see :func:`translate`)."""
    try:
        return operation(**kwargs)
    except Exception as error:
        raise translate(error, source, bucket, key) from error


def guarded(source: BucketSource, bucket: str, stream: Iterable[T]) -> Iterator[T]:
    """``stream`` (a listing that asks the server page by page) with each failure translated."""
    items = iter(stream)
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except Exception as error:
            raise translate(error, source, bucket) from error
        yield item


def translate(error: Exception, source: BucketSource, bucket: str, key: str | None = None) -> Exception:
    """A boto3 failure as the hadr error an operator can act on; anything else unchanged."""
    from botocore import exceptions

    place = where(source, bucket, key)
    if isinstance(error, exceptions.NoCredentialsError):
        return UsageError(f"no S3 credentials for {place}", hint=CREDENTIALS_HINT)
    if isinstance(error, exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code == "NoSuchBucket" or (code in _MISSING and key is None):
            return BucketMissing(f"bucket {bucket} does not exist at {source.endpoint or 'AWS'}", hint="check the name")
        if code in _MISSING:
            return ObjectMissing(f"{place} is missing")
        if code in _DENIED or status == "403":
            return UsageError(f"access to {place} was denied ({code})", hint=CREDENTIALS_HINT)
        if code in _TRANSIENT or status.startswith("5"):
            return TransientStorageError(f"S3 error on {place}: {code} (HTTP {status}) after retries")
        return HadrError(f"S3 error on {place}: {code}: {error}")
    if isinstance(error, exceptions.EndpointConnectionError):
        return UsageError(
            f"cannot reach the S3 endpoint of {place}: {error}", hint="is the endpoint up and its address right?"
        )
    if isinstance(error, (exceptions.ConnectionError, exceptions.HTTPClientError, exceptions.IncompleteReadError)):
        return TransientStorageError(f"the connection to {place} failed: {error}")
    if isinstance(error, exceptions.BotoCoreError):
        return UsageError(f"S3 request to {place} failed: {error}", hint="check the endpoint and credentials")
    return error


def bucket_exists(client, source: BucketSource, bucket: str) -> bool:
    """Whether ``bucket`` exists (HEAD answers 404 without a code for a missing bucket)."""
    try:
        call(source, bucket, None, client.head_bucket, Bucket=bucket)
    except BucketMissing:
        return False
    return True


def versioning_enabled(client, source: BucketSource, bucket: str) -> bool:
    answer = call(source, bucket, None, client.get_bucket_versioning, Bucket=bucket)
    return answer.get("Status") == "Enabled"
