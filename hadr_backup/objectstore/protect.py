"""``hadr protect s3``: make a bucket source's buckets keep their history, idempotently.

Per bucket: versioning on; the lifecycle rule ``hadr-noncurrent-versions`` expiring noncurrent versions
after the policy's ``noncurrent_days`` (merged into the bucket's rules: every other rule is kept as it
is); the default object-lock retention of the policy where the bucket was created with object lock.
Each step compares first and changes only what differs, so a second run changes nothing. The result says
what changed (or, with ``--dry-run``, what would) and the point-in-time window the rules then leave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hadr_backup.objectstore.client import BucketClient, source_client
from hadr_backup.objectstore.protection import RULE_ID, BucketState, LockState, inspect_bucket
from hadr_backup.policy.model import BucketSource, Policy
from hadr_backup.ui import plural


@dataclass(frozen=True)
class Change:
    setting: str  # versioning | lifecycle | object-lock
    before: str
    after: str

    def to_json(self) -> dict[str, str]:
        return {"setting": self.setting, "before": self.before, "after": self.after}

    def describe(self) -> str:
        return f"{self.setting}: {self.before} -> {self.after}"


@dataclass
class BucketProtected:
    state: BucketState  # as the bucket is after the run (or would be, with --dry-run)
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.state.to_json(),
            "changes": [change.to_json() for change in self.changes],
            "notes": self.notes + self.state.warnings(),
        }


@dataclass
class ProtectResult:
    source: str
    dry_run: bool
    buckets: list[BucketProtected]

    @property
    def changed(self) -> int:
        return sum(len(b.changes) for b in self.buckets)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "dry_run": self.dry_run, "buckets": [b.to_json() for b in self.buckets]}

    def render(self, out) -> None:
        verb = "would change" if self.dry_run else "changed"
        out.line(f"{self.source}: {verb} {plural(self.changed, 'setting')}")
        for bucket in self.buckets:
            out.line(f"  {bucket.state.describe()}")
            for change in bucket.changes:
                out.line(f"    {verb}: {change.describe()}")
            for note in bucket.notes + bucket.state.warnings():
                out.line(f"    note: {note}")


def run_protect_s3(policy: Policy, source_name: str | None = None, *, dry_run: bool = False) -> ProtectResult:
    source = policy.sources.buckets_named(source_name)
    client = source_client(source, policy.sources.buckets.index(source))
    return ProtectResult(source.name, dry_run, [_protect(client, source, b, dry_run) for b in source.buckets])


def _protect(client: BucketClient, source: BucketSource, bucket: str, dry_run: bool) -> BucketProtected:
    # 1. read what the bucket has
    done = BucketProtected(inspect_bucket(client, bucket))
    # 2. versioning on
    if done.state.versioning != "enabled":
        done.changes.append(Change("versioning", done.state.versioning, "enabled"))
        if not dry_run:
            client.call("put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        done.state.versioning = "enabled"
    # 3. hadr's noncurrent-version rule, merged with the bucket's own rules
    rules = merged_rules(done.state.rules, source.noncurrent_days)
    if rules != done.state.rules:
        before = _rule_days(done.state.rules)
        done.changes.append(
            Change("lifecycle", before, f"{RULE_ID}: noncurrent versions expire after {source.noncurrent_days} days")
        )
        if not dry_run:
            client.call("put_bucket_lifecycle_configuration", Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        done.state.rules = rules
    # 4. object lock, where the bucket allows it
    _lock(client, source, done, dry_run)
    return done


def merged_rules(rules: list[dict], days: int) -> list[dict]:
    """The bucket's rules with hadr's noncurrent-version rule set to ``days`` (added, or replaced in
    place); every other rule as it was."""
    ours = {
        "ID": RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
    }
    kept = [rule for rule in rules if rule.get("ID") != RULE_ID]
    current = next((rule for rule in rules if rule.get("ID") == RULE_ID), None)
    if current is not None and _same_rule(current, ours):
        return rules
    return kept + [ours]


def _same_rule(current: dict, ours: dict) -> bool:
    return (
        current.get("Status") == "Enabled"
        and (current.get("Filter") or {}).get("Prefix", current.get("Prefix", "")) in ("", None)
        and (current.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
        == ours["NoncurrentVersionExpiration"]["NoncurrentDays"]
    )


def _rule_days(rules: list[dict]) -> str:
    current = next((rule for rule in rules if rule.get("ID") == RULE_ID), None)
    if current is None:
        return "no hadr rule"
    days = (current.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
    return f"{RULE_ID}: {current.get('Status', '?').lower()}, {days} days"


def _lock(client: BucketClient, source: BucketSource, done: BucketProtected, dry_run: bool) -> None:
    wanted, lock = source.object_lock, done.state.lock
    if wanted is None:
        return
    if not lock.enabled:
        done.notes.append(
            f"object lock not set: {done.state.bucket} was not created with object lock (S3 and MinIO turn it on "
            "only when a bucket is created); create a new bucket with object lock to have it"
        )
        return
    if (lock.mode, lock.days) == (wanted.mode, wanted.days):
        return
    done.changes.append(Change("object-lock", lock.describe(), f"{wanted.mode} {wanted.days} days"))
    if not dry_run:
        client.call(
            "put_object_lock_configuration",
            Bucket=done.state.bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": wanted.mode, "Days": wanted.days}},
            },
        )
    done.state.lock = LockState(True, wanted.mode, wanted.days)
