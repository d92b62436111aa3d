"""Mirror versions a killed run wrote and no manifest records: found again by the next run, not copied twice.

A run killed mid-copy leaves versions in the mirror bucket that no complete run's manifest references. The
next run of the source (``since``: when the failed run began, less the clock margin) looks, before it copies
a version, for a version of the same mirror key written since then with the same ETag and size, adopts it
(each at most once), and takes its SHA-256 from the mirror's checksum (or by reading it back). Only runs that
follow a failed run look: one ListObjectVersions per copied key is a price paid once.
"""

from __future__ import annotations

import hashlib
import threading

from hadr_backup.objectstore.client import BucketClient, b64_to_hex
from hadr_backup.objectstore.versions import VersionRecord


class Leftovers:
    def __init__(self, client: BucketClient, bucket: str, since: float):
        self.client, self.bucket, self.since = client, bucket, since
        self._taken: set[str] = set()
        self._lock = threading.Lock()

    def adopt(self, record: VersionRecord, destination: str) -> tuple[str, str] | None:
        """(mirror version id, SHA-256) of a leftover copy of ``record`` at ``destination``; None: none."""
        listed = self.client.call("list_object_versions", Bucket=self.bucket, Prefix=destination)
        for version in listed.get("Versions", []):
            etag = (version.get("ETag") or "").strip('"')
            fits = version["Key"] == destination and version["LastModified"].timestamp() >= self.since
            if fits and etag == record.etag and version.get("Size") == record.size and self._take(version):
                return version["VersionId"], self._sha256(destination, version["VersionId"])
        return None

    def _take(self, version: dict) -> bool:
        with self._lock:
            if version["VersionId"] in self._taken:
                return False
            self._taken.add(version["VersionId"])
            return True

    def _sha256(self, key: str, version_id: str) -> str:
        head = self.client.call(
            "head_object", Bucket=self.bucket, Key=key, VersionId=version_id, ChecksumMode="ENABLED"
        )
        checksum = head.get("ChecksumSHA256")
        if checksum and "-" not in checksum:
            return b64_to_hex(checksum)
        body = self.client.call("get_object", Bucket=self.bucket, Key=key, VersionId=version_id)["Body"]
        sha = hashlib.sha256()
        with body:
            while chunk := body.read(1 << 20):
                sha.update(chunk)
        return sha.hexdigest()
