"""The S3 client of a bucket source or a mirror: boto3, our own retries, errors in hadr's words.

Every call goes through ``BucketClient.call``: transient answers (500, 503, SlowDown, a dropped
connection) are retried with back-off (``Backoff``); what no retry fixes becomes one clear error —
a missing bucket, refused credentials or an endpoint that does not answer is ``BucketUnavailable``
(exit 2) naming the policy entry to fix; a version deleted since it was listed is ``VersionGone``.
The status codes that count as transient are the repository driver's (``repo/s3.py``).
"""

from __future__ import annotations

import functools
import time
from email.utils import parsedate_to_datetime
from typing import Any

from hadr_backup.errors import BucketUnavailable, HadrError, TransientStorageError, VersionGone
from hadr_backup.policy.model import BucketMirror, BucketSource
from hadr_backup.repo.s3 import _AUTH_CODES, _TRANSIENT_CODES, _transient_transport_error, make_client
from hadr_backup.repo.storage import Backoff, retry_transient

RETRY = Backoff(attempts=8, base_delay=0.1, max_delay=4.0, max_seconds=90.0)
QUICK = Backoff(attempts=2, base_delay=0.2)  # reports (info, check): say what is wrong, soon
_GONE_CODES = {"NoSuchVersion", "NoSuchKey"}


class BucketClient:
    """A boto3 S3 client plus where it points (for messages) and how its calls are retried."""

    def __init__(self, client, endpoint: str | None, setting: str, backoff: Backoff = RETRY):
        self.client, self.endpoint, self.setting, self.backoff = client, endpoint, setting, backoff

    @property
    def where(self) -> str:
        return self.endpoint or "AWS"

    def call(self, operation: str, *, absent: frozenset[str] = frozenset(), **kwargs) -> dict:
        """``client.<operation>(**kwargs)``, retried while the failure is transient; {} when the server
        answers with an error code in ``absent`` (a configuration the bucket does not have)."""
        method = getattr(self.client, operation)

        def once() -> dict:
            try:
                return method(**kwargs)
            except Exception as error:
                if _code(error) in absent:
                    return {}
                raise self.translate(error, kwargs.get("Bucket", "?"), kwargs.get("Key")) from error

        try:
            return retry_transient(once, self.backoff)
        except _Unreachable as error:
            raise BucketUnavailable(error.message, hint=error.hint) from error

    def translate(self, error: Exception, bucket: str, key: str | None = None) -> Exception:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        what = f"s3://{bucket}/{key or ''} at {self.where}"
        if isinstance(error, NoCredentialsError):
            return BucketUnavailable(f"no S3 credentials to reach {what}", hint=self._credentials_hint())
        if isinstance(error, ClientError):
            return self._client_error(error, bucket, what)
        if _transient_transport_error(error):
            return _Unreachable(
                f"cannot reach the S3 endpoint {self.where}: {error}",
                hint=f"is the endpoint up and {self.setting}.endpoint right?",
            )
        if isinstance(error, BotoCoreError):
            return BucketUnavailable(f"S3 request for {what} failed: {error}", hint=f"check {self.setting}")
        return error

    def _client_error(self, error, bucket: str, what: str) -> Exception:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code == "NoSuchBucket":
            return BucketUnavailable(
                f"bucket {bucket} does not exist at {self.where}", hint=f"create it, or fix {self.setting}"
            )
        if code in _GONE_CODES:
            return VersionGone(f"{what}: {code}")
        if code in _AUTH_CODES or status == "403":
            return BucketUnavailable(f"access to {what} was denied ({code})", hint=self._credentials_hint())
        if code in _TRANSIENT_CODES or status.startswith("5"):
            return TransientStorageError(f"S3 error on {what}: {code} (HTTP {status}) after retries")
        return HadrError(f"S3 error on {what}: {code}: {error}")

    def _credentials_hint(self) -> str:
        return f"check {self.setting}.access_key and secret_key (e.g. access_key: ${{AWS_ACCESS_KEY_ID}})"


def _code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else None


class _Unreachable(TransientStorageError):
    """The endpoint did not answer (retried; after the last retry: BucketUnavailable)."""


class ListingClient:
    """What ``list_versions`` calls, through the client's retries; keeps the server's Date of the first page
    (``server_time``: the server's clock when the listing began)."""

    def __init__(self, client: BucketClient):
        self._client, self.meta = client, client.client.meta
        self.server_time: float | None = None

    def list_object_versions(self, **request) -> dict:
        page = self._client.call("list_object_versions", **request)
        if self.server_time is None:
            date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            self.server_time = parsedate_to_datetime(date).timestamp() if date else time.time()
        return page


def source_client(source: BucketSource, index: int = 0, backoff: Backoff = RETRY) -> BucketClient:
    """The client of a bucket source, sized for its copy workers."""
    client = _client(source.endpoint, source.region, source.access_key, source.secret_key, source.workers + 4)
    return BucketClient(client, source.endpoint, f"sources.buckets[{index}] ({source.name})", backoff)


def mirror_client(mirror: BucketMirror, workers: int = 16, setting: str = "mirror") -> BucketClient:
    client = _client(mirror.endpoint, mirror.region, mirror.access_key, mirror.secret_key, workers + 4)
    return BucketClient(client, mirror.endpoint, setting)


def same_account(source: BucketSource, mirror: BucketMirror) -> bool:
    """Whether one client reaches both (then the mirror is filled by server-side CopyObject)."""
    return (source.endpoint, source.region, source.access_key, source.secret_key) == (
        mirror.endpoint,
        mirror.region,
        mirror.access_key,
        mirror.secret_key,
    )


@functools.lru_cache(maxsize=32)
def _client(endpoint: str | None, region: str, access_key: str | None, secret_key: str | None, pool: int) -> Any:
    # botocore tries once: ours retry (RETRY), a failure midway through a body included
    retries = {"total_max_attempts": 1}
    return make_client(endpoint, region, access_key, secret_key, pool=pool, retries=retries, path_style=bool(endpoint))
