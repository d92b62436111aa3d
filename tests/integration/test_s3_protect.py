"""hadr protect s3 against moto over HTTP: versioning, hadr's lifecycle rule beside the bucket's own,
object lock where the bucket has it, the window reported, idempotent, and --dry-run changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import hadr_cli
from tests.integration.s3_support import bucket_policy
from tests.schema_check import assert_schema

USER_RULE = {
    "ID": "logs-expire",
    "Status": "Enabled",
    "Filter": {"Prefix": "logs/"},
    "Expiration": {"Days": 90},
}


def protect(policy_file: Path, *args: str) -> dict:
    return assert_schema("protect-s3", hadr_cli(policy_file, "--json", "protect", "s3", *args, check=True).stdout)


def test_protect_is_idempotent_keeps_other_rules_and_reports_the_window(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    plain, locked = f"plain-{time.time_ns()}", f"locked-{time.time_ns()}"
    client.create_bucket(Bucket=plain)
    client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    client.put_bucket_lifecycle_configuration(Bucket=plain, LifecycleConfiguration={"Rules": [USER_RULE]})
    policy_file = bucket_policy(
        tmp_path,
        s3_server.endpoint_url,
        [plain, locked],
        noncurrent_days=21,
        object_lock={"mode": "GOVERNANCE", "days": 7},
    )

    dry = protect(policy_file, "--dry-run")
    assert dry["dry_run"] and [c["setting"] for c in dry["buckets"][0]["changes"]] == ["versioning", "lifecycle"]
    assert client.get_bucket_versioning(Bucket=plain).get("Status") is None  # nothing changed
    assert client.get_bucket_lifecycle_configuration(Bucket=plain)["Rules"][0]["ID"] == "logs-expire"

    first = protect(policy_file)
    by_bucket = {b["bucket"]: b for b in first["buckets"]}
    assert [c["setting"] for c in by_bucket[plain]["changes"]] == ["versioning", "lifecycle"]
    assert by_bucket[plain]["window"] == "21 days" and by_bucket[plain]["noncurrent_days"] == 21
    assert any("was not created with object lock" in note for note in by_bucket[plain]["notes"])
    assert "object-lock" in [c["setting"] for c in by_bucket[locked]["changes"]]
    assert by_bucket[locked]["object_lock"] == {"enabled": True, "mode": "GOVERNANCE", "days": 7}

    assert client.get_bucket_versioning(Bucket=plain)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=plain)["Rules"]}
    assert set(rules) == {"logs-expire", "hadr-noncurrent-versions"}
    assert rules["logs-expire"]["Expiration"]["Days"] == 90
    assert rules["hadr-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 21
    lock = client.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"

    second = protect(policy_file)
    assert [b["changes"] for b in second["buckets"]] == [[], []]
    human = hadr_cli(policy_file, "protect", "s3", check=True).stdout
    assert "changed 0 settings" in human and "point-in-time window 21 days" in human

    # a user rule that expires noncurrent versions sooner is what the window really is
    shorter = {**USER_RULE, "ID": "tmp-noncurrent", "NoncurrentVersionExpiration": {"NoncurrentDays": 3}}
    client.put_bucket_lifecycle_configuration(
        Bucket=plain, LifecycleConfiguration={"Rules": [*rules.values(), shorter]}
    )
    third = protect(policy_file, "--dry-run")
    assert third["buckets"][0]["window"] == "3 days" and third["buckets"][0]["changes"] == []
    assert any("under a prefix only" in note for note in third["buckets"][0]["notes"])


def test_suspended_versioning_is_reported_and_turned_back_on(s3_server, tmp_path: Path) -> None:
    client = s3_server.client()
    bucket = f"susp-{time.time_ns()}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    policy_file = bucket_policy(tmp_path, s3_server.endpoint_url, [bucket])
    hadr_cli(policy_file, "init", check=True)
    dry = protect(policy_file, "--dry-run")
    assert dry["buckets"][0]["changes"][0] == {"setting": "versioning", "before": "suspended", "after": "enabled"}
    info = assert_schema("info", hadr_cli(policy_file, "--json", "info", check=True).stdout)
    shown = info["sources"][0]["archive"]["buckets"][0]
    assert (shown["versioning"], shown["window"]) == ("suspended", "none")
    assert "versioning is suspended" in hadr_cli(policy_file, "info").stdout
    protect(policy_file)
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert protect(policy_file)["buckets"][0]["window"] == "30 days"


def test_protect_a_missing_bucket_exits_2(s3_server, tmp_path: Path) -> None:
    policy_file = bucket_policy(tmp_path, s3_server.endpoint_url, ["not-there-at-all"])
    done = hadr_cli(policy_file, "protect", "s3")
    assert done.returncode == 2 and "bucket not-there-at-all does not exist" in done.stderr
