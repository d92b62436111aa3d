"""The repository end to end through the CLI: init, keys, catalog, list, info, verify, on local and S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hadr_backup.errors import KeyMissing, WrongKey
from hadr_backup.repo.keys import create_key_file
from hadr_backup.repo.repository import init_repo, open_repo
from tests.helpers import local_policy, local_policy_data, write_policy


def hadr(policy_file: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture(params=["local", "s3"])
def policy_data(request, tmp_path):
    key = tmp_path / "hadr.key"
    create_key_file(key)
    if request.param == "local":
        return local_policy_data(tmp_path / "repo", key)
    server = request.getfixturevalue("s3_server")
    bucket = f"repo-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=bucket)
    return {
        "repository": {
            "url": f"s3://{bucket}/hadr",
            "endpoint": server.endpoint_url,
            "access_key": "testing",
            "secret_key": "testing",
            "lock_dir": str(tmp_path / "locks"),
        },
        "encryption": {"key_file": str(key)},
    }


def add_backup(policy, payload: bytes, kind="pg", source="main"):
    from hadr_backup.policy.load import parse_policy

    policy = parse_policy(policy, "test") if isinstance(policy, dict) else policy
    with open_repo(policy, write=True) as repo:
        entry = repo.begin_backup(kind, source)
        stored = repo.put_object(f"backups/{kind}/{source}/{entry.id}/data", [payload])
        repo.finish_backup(entry, [stored])
        return entry.id, stored


def test_init_list_info_verify_roundtrip(policy_data, tmp_path):
    policy_file = write_policy(tmp_path / "policy.yaml", policy_data)
    created = hadr(policy_file, "--json", "init")
    assert created.returncode == 0, created.stderr
    meta = json.loads(created.stdout)
    assert meta["created"] is True and meta["encryption"]["cipher"] == "aes-256-gcm"
    again = hadr(policy_file, "--json", "init")
    assert json.loads(again.stdout)["created"] is False and json.loads(again.stdout)["id"] == meta["id"]

    backup_id, stored = add_backup(policy_data, os.urandom(3 << 20))
    listed = json.loads(hadr(policy_file, "--json", "list").stdout)
    assert [(b["id"], b["state"], b["raw_size"]) for b in listed["backups"]] == [(backup_id, "complete", 3 << 20)]
    human = hadr(policy_file, "list")
    assert backup_id in human.stdout and "complete" in human.stdout

    info = json.loads(hadr(policy_file, "--json", "info").stdout)
    assert info["id"] == meta["id"] and info["stored_bytes"] == stored.stored_size

    verified = hadr(policy_file, "--json", "verify", "repo", "--deep")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["checked"]["objects"] == 1


def test_wrong_key_and_missing_key_are_refused_and_change_nothing(tmp_path):
    key = tmp_path / "right.key"
    create_key_file(key)
    policy = local_policy(tmp_path / "repo", key)
    init_repo(policy)
    add_backup(policy, b"ledger rows")
    before = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in (tmp_path / "repo").rglob("*") if p.is_file())

    other = tmp_path / "wrong.key"
    create_key_file(other)
    with pytest.raises(WrongKey, match="wrapped by master key"):
        with open_repo(local_policy(tmp_path / "repo", other)):
            pass
    with pytest.raises(KeyMissing, match="encrypted"):
        with open_repo(local_policy(tmp_path / "repo")):
            pass
    run = hadr(write_policy(tmp_path / "p.yaml", local_policy_data(tmp_path / "repo", other)), "list")
    assert run.returncode == 2 and "Traceback" not in run.stderr and "key" in run.stderr

    after = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert after == before


def test_key_rotation_rewraps_without_rewriting_data(tmp_path):
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    create_key_file(old_key)
    policy_file = write_policy(tmp_path / "p.yaml", local_policy_data(tmp_path / "repo", old_key))
    assert hadr(policy_file, "init").returncode == 0
    payload = os.urandom(200_000)
    backup_id, stored = add_backup(local_policy(tmp_path / "repo", old_key), payload)
    data_file = tmp_path / "repo" / stored.key
    data_before = data_file.read_bytes()

    assert hadr(policy_file, "key", "create", "--file", str(new_key)).returncode == 0
    assert oct(new_key.stat().st_mode & 0o777) == "0o600"
    rotated = hadr(policy_file, "--json", "key", "rotate", "--new-key-file", str(new_key))
    assert rotated.returncode == 0, rotated.stderr
    assert len(json.loads(rotated.stdout)["rewrapped"]) == 1

    assert data_file.read_bytes() == data_before  # data not rewritten
    with open_repo(local_policy(tmp_path / "repo", new_key)) as repo:
        assert b"".join(repo.read_object(stored.key, sha256=stored.sha256)) == payload
    with pytest.raises(WrongKey):
        with open_repo(local_policy(tmp_path / "repo", old_key)):
            pass
    # finishing an already-finished rotation is harmless
    again = hadr(
        write_policy(tmp_path / "p2.yaml", local_policy_data(tmp_path / "repo", old_key)),
        "key",
        "rotate",
        "--new-key-file",
        str(new_key),
    )
    assert again.returncode == 2  # the old key no longer opens the repository
    assert "wrapped by master key" in again.stderr


def test_key_create_refuses_to_overwrite(tmp_path):
    key = tmp_path / "k.key"
    policy_file = write_policy(tmp_path / "p.yaml", local_policy_data(tmp_path / "repo", key))
    assert hadr(policy_file, "key", "create").returncode == 0
    content = key.read_bytes()
    second = hadr(policy_file, "key", "create")
    assert second.returncode == 2 and "exists" in second.stderr
    assert key.read_bytes() == content


def test_verify_deep_finds_tampering_and_missing_objects(tmp_path):
    key = tmp_path / "k.key"
    create_key_file(key)
    policy_file = write_policy(tmp_path / "p.yaml", local_policy_data(tmp_path / "repo", key))
    assert hadr(policy_file, "init").returncode == 0
    policy = local_policy(tmp_path / "repo", key)
    _, first = add_backup(policy, os.urandom(100_000))
    _, second = add_backup(policy, os.urandom(100_000))
    assert hadr(policy_file, "verify", "repo", "--deep").returncode == 0

    tampered = tmp_path / "repo" / first.key
    raw = bytearray(tampered.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    tampered.write_bytes(bytes(raw))
    quick = hadr(policy_file, "verify", "repo")
    assert quick.returncode == 0  # same size: only a deep read can see it
    deep = hadr(policy_file, "--json", "verify", "repo", "--deep")
    assert deep.returncode == 3
    codes = {(f["code"], f["level"]) for f in json.loads(deep.stdout)["findings"]}
    assert ("corrupt-object", "error") in codes

    (tmp_path / "repo" / second.key).unlink()
    missing = hadr(policy_file, "--json", "verify", "repo")
    assert missing.returncode == 3
    assert any(f["code"] == "object-missing" for f in json.loads(missing.stdout)["findings"])


def test_commands_on_a_missing_repository_say_run_init(tmp_path):
    policy_file = write_policy(tmp_path / "p.yaml", local_policy_data(tmp_path / "nothing"))
    run = hadr(policy_file, "list")
    assert run.returncode == 1
    assert "hadr init" in run.stderr and "Traceback" not in run.stderr


def test_unreachable_s3_repository_is_a_clear_error(tmp_path):
    policy_file = write_policy(
        tmp_path / "p.yaml",
        {
            "repository": {
                "url": "s3://nowhere-bucket/x",
                "endpoint": "http://127.0.0.1:9",
                "access_key": "a",
                "secret_key": "b",
                "lock_dir": str(tmp_path),
            }
        },
    )
    run = hadr(policy_file, "list")
    assert run.returncode == 1
    assert "cannot reach" in run.stderr and "Traceback" not in run.stderr


def test_info_shows_a_bucket_source_it_cannot_reach_as_such(tmp_path):
    data = {
        **local_policy_data(tmp_path / "repo"),
        "sources": {
            "redis": [{"name": "queues", "url": "redis://127.0.0.1:9"}],
            "buckets": [{"name": "items", "endpoint": "http://127.0.0.1:9", "buckets": ["raw-data-items"]}],
        },
    }
    policy_file = write_policy(tmp_path / "policy.yaml", data)
    assert hadr(policy_file, "init").returncode == 0
    shown = json.loads(hadr(policy_file, "--json", "info").stdout)["sources"]
    assert [(s["kind"], s["name"], s["supported"]) for s in shown] == [("redis", "queues", True), ("s3", "items", True)]
    (bucket,) = shown[1]["archive"]["buckets"]
    assert bucket["window"] == "unknown" and "cannot reach the S3 endpoint http://127.0.0.1:9" in bucket["error"]
    human = hadr(policy_file, "info").stdout
    assert "raw-data-items: cannot be read: cannot reach the S3 endpoint" in human
    refused = hadr(policy_file, "list", "redis")
    assert (
        refused.returncode == 0
        and "no backups yet — take one with `hadr backup pg` or `hadr backup redis` or `hadr backup s3`"
        in refused.stdout
    )
