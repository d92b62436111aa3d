"""What a bucket's own settings leave of its history: versioning, noncurrent-version expiry, object lock.

Read-only: ``inspect_bucket`` is what `hadr protect s3` starts from, what `hadr info` shows per bucket and
what `hadr check` judges. The point-in-time window a bucket really keeps is the shortest noncurrent-version
expiry of its enabled lifecycle rules ("unbounded" when none expires noncurrent versions); with versioning
suspended or off an overwrite or delete loses the old content at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hadr_backup.errors import HadrError
from hadr_backup.objectstore.client import BucketClient

RULE_ID = "hadr-noncurrent-versions"
_ABSENT = frozenset(
    {"NoSuchLifecycleConfiguration", "ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}
)


@dataclass(frozen=True)
class LockState:
    enabled: bool  # the bucket was created with object lock
    mode: str | None = None  # default retention
    days: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "mode": self.mode, "days": self.days}

    def describe(self) -> str:
        if not self.enabled:
            return "not enabled (the bucket was not created with object lock)"
        return f"{self.mode} {self.days} days" if self.mode else "enabled, no default retention"


@dataclass
class BucketState:
    """One bucket's protection as read from the server; ``error`` when it could not be read."""

    bucket: str
    versioning: str = "off"  # enabled | suspended | off
    rules: list[dict] = field(default_factory=list)
    lock: LockState = field(default_factory=lambda: LockState(False))
    error: str | None = None

    @property
    def noncurrent_days(self) -> int | None:
        """The shortest noncurrent-version expiry of the enabled rules (None: noncurrent versions stay)."""
        days = [rule_days(rule) for rule in self.rules if rule.get("Status") == "Enabled"]
        return min((d for d in days if d is not None), default=None)

    @property
    def window(self) -> str:
        if self.error is not None:
            return "unknown"
        if self.versioning != "enabled":
            return "none"
        days = self.noncurrent_days
        return "unbounded" if days is None else f"{days} days"

    def warnings(self) -> list[str]:
        found = []
        if self.error is None and self.versioning != "enabled":
            found.append(
                f"{self.bucket}: versioning is {self.versioning}: an overwrite or delete loses the old content "
                "at once (run `hadr protect s3`)"
            )
        partial = [r.get("ID", "?") for r in self.rules if _prefix(r) and rule_days(r) is not None]
        if partial:
            found.append(f"{self.bucket}: rule(s) {', '.join(partial)} expire noncurrent versions under a prefix only")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "versioning": self.versioning,
            "noncurrent_days": self.noncurrent_days,
            "window": self.window,
            "object_lock": self.lock.to_json(),
            "error": self.error,
        }

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.bucket}: cannot be read: {self.error}"
        return (
            f"{self.bucket}: versioning {self.versioning}, point-in-time window {self.window} "
            f"(noncurrent versions kept {self.window if self.window != 'none' else 'not at all'}), "
            f"object lock {self.lock.describe()}"
        )


def rule_days(rule: dict) -> int | None:
    return (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")


def _prefix(rule: dict) -> str:
    found = rule.get("Prefix") or (rule.get("Filter") or {}).get("Prefix")
    return found or ""


def inspect_bucket(client: BucketClient, bucket: str) -> BucketState:
    """Read the bucket's versioning, lifecycle rules and object lock (BucketUnavailable when it cannot)."""
    versioning = client.call("get_bucket_versioning", Bucket=bucket).get("Status")
    state = BucketState(bucket, versioning=(versioning or "off").lower())
    state.rules = _optional(client, "get_bucket_lifecycle_configuration", bucket).get("Rules", [])
    lock = _optional(client, "get_object_lock_configuration", bucket).get("ObjectLockConfiguration", {})
    retention = (lock.get("Rule") or {}).get("DefaultRetention") or {}
    state.lock = LockState(lock.get("ObjectLockEnabled") == "Enabled", retention.get("Mode"), retention.get("Days"))
    return state


def inspect_quietly(client: BucketClient, bucket: str) -> BucketState:
    """``inspect_bucket`` for reports: a failure is the state's ``error``, never an exception."""
    try:
        return inspect_bucket(client, bucket)
    except HadrError as error:
        return BucketState(bucket, error=str(error).splitlines()[0])


def _optional(client: BucketClient, operation: str, bucket: str) -> dict:
    """A bucket setting that may not exist (an absent configuration reads as {})."""
    return client.call(operation, absent=_ABSENT, Bucket=bucket)
