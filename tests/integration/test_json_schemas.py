"""Every command's ``--json`` output, from real servers, conforms to its schema in docs/schemas.

One encrypted PostgreSQL cluster archiving into its repository serves every command but the sandbox ones
and demo (validated in test_sandbox.py and test_demo.py, on the sandboxes those tests start anyway).
``--json`` is given before the subcommand in some calls and after it in others: both are the API.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pg_support import PgEnv
from tests.schema_check import assert_schema


@pytest.fixture(scope="module")
def env() -> Iterator[PgEnv]:
    """A cluster with one table, one base backup and the WAL after it archived."""
    pg = PgEnv(encrypted=True)
    try:
        pg.sql("create table ledger(id int primary key, amount int)")
        pg.sql("insert into ledger select g, g * 10 from generate_series(1, 100) g")
        pg.backup()
        pg.sql("insert into ledger values (101, 1010)")
        pg.switch_and_wait()
        yield pg
    finally:
        pg.close()


def run_json(env: PgEnv, *args: str, expect: int = 0) -> dict:
    done: subprocess.CompletedProcess = env.hadr(*args)
    assert done.returncode == expect, f"hadr {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_repository_commands(env: PgEnv) -> None:
    init = assert_schema("init", run_json(env, "init", "--json"))
    assert init["created"] is False and init["encryption"]["cipher"] == "aes-256-gcm"

    listed = assert_schema("list", run_json(env, "--json", "list"))
    (entry,) = [e for e in listed["backups"] if e["state"] == "complete"][:1]
    assert entry["meta"]["start_time"] <= entry["meta"]["stop_time"]  # RFC 3339 strings sort as instants

    info = assert_schema("info", run_json(env, "info", "--json"))
    (source,) = info["sources"]
    assert source["archive"]["identity"]["system_identifier"] == entry["meta"]["system_identifier"]
    assert source["restorable_window"][0]["backups"] == [entry["id"]]

    report = assert_schema("verify-repo", run_json(env, "verify", "repo", "--deep", "--json"))
    assert report["passed"] is True and report["checked"]["wal_objects"] > 0
    checked = assert_schema("check", run_json(env, "check", "--json", expect=3))  # the test cluster runs
    assert {f["code"] for f in checked["findings"] if f["level"] == "error"} == {"archive-timeout"}  # without one

    repaired = assert_schema("repair-catalog", run_json(env, "--json", "repair", "catalog"))
    assert repaired["passed"] is True and repaired["kept"] >= 1


def test_backup_json_agrees_with_list_and_info(env: PgEnv) -> None:
    backup = assert_schema("backup-pg", run_json(env, "backup", "pg", "--json"))
    listed = run_json(env, "list", "pg", "--json")
    entry = next(e for e in listed["backups"] if e["id"] == backup["backup_id"])
    assert entry["meta"]["system_identifier"] == backup["system_identifier"]
    assert (entry["meta"]["start_time"], entry["meta"]["stop_time"]) == (backup["start_time"], backup["stop_time"])
    assert entry["meta"]["start_lsn"] == backup["start_lsn"]


def test_wal_commands(env: PgEnv, tmp_path: Path) -> None:
    env.sql("insert into ledger values (102, 1020)")  # a segment with a record in it, so that the switch closes it
    segment = env.switch_and_wait()
    path = Path(env.cluster.data_dir) / "pg_wal" / segment
    pushed = assert_schema("wal-push", run_json(env, "--json", "wal-push", "--source", "main", str(path)))
    assert pushed["status"] == "already archived" and pushed["name"] == segment

    dest = tmp_path / "fetched"
    fetched = assert_schema("wal-fetch", run_json(env, "wal-fetch", "--prefetch", "0", segment, str(dest), "--json"))
    assert fetched["status"] == "fetched" and fetched["size"] == dest.stat().st_size

    absent = assert_schema(
        "wal-fetch",
        run_json(
            env,
            "--json",
            "wal-fetch",
            "--prefetch",
            "0",
            "0000000100000000000000FE",
            str(tmp_path / "absent"),
            expect=1,
        ),
    )
    assert absent["status"] == "absent" and absent["size"] is None and not (tmp_path / "absent").exists()


def test_restore_json(env: PgEnv) -> None:
    to = env.new_restore_dir()
    restored = assert_schema("restore-pg", run_json(env, "restore", "pg", "--to", str(to), "--latest", "--json"))
    assert restored["state"] == "configured" and restored["target"]["kind"] == "latest"
    assert restored["target"]["value"] == restored["stops_at"]["lsn"]


def test_key_commands(env: PgEnv) -> None:
    """Last in this module: the repository's master key changes (the policy is pointed at the new one)."""
    new_key = env.base / "rotated.key"
    created = assert_schema("key-create", run_json(env, "key", "create", "--file", str(new_key), "--json"))
    rotated = assert_schema("key-rotate", run_json(env, "--json", "key", "rotate", "--new-key-file", str(new_key)))
    assert rotated["new_master_key_id"] == created["key_id"] and rotated["rewrapped"]
    env.key_file = new_key
    env.write_policy()
    assert run_json(env, "--json", "init")["encryption"]["master_key_id"] == created["key_id"]
