"""A missing catalog is an alarm, not an empty repository; `hadr repair catalog` rebuilds it from the
backups' own descriptions, and a restore works again from the rebuilt catalog."""

from __future__ import annotations

import json
import os
import time

import pytest

from hadr_backup.repo import layout
from hadr_backup.repo.repository import open_repo
from tests.integration.pg_support import PgEnv, restored_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env():
    env = PgEnv(encrypted=True)
    env.sql("create table item(id int primary key)")
    env.sql("insert into item select generate_series(1, 100)")
    yield env
    env.close()


@pytest.fixture(scope="module")
def two_backups(env: PgEnv) -> list[str]:
    first = env.backup().backup_id
    env.sql("insert into item select generate_series(101, 200)")
    return [first, env.backup().backup_id]


def catalog_files(env: PgEnv) -> list:
    return [env.repo_dir / layout.CATALOG, env.repo_dir / layout.CATALOG_COPY]


def listed(env: PgEnv) -> dict[str, str]:
    done = env.hadr("--json", "list", check=True)
    return {row["id"]: row["state"] for row in json.loads(done.stdout)["backups"]}


def test_lost_catalog_is_an_alarm_everywhere_and_repair_brings_every_backup_back(env: PgEnv, two_backups) -> None:
    before = listed(env)
    assert {before[i] for i in two_backups} == {"complete"}
    objects_before = sorted(p for p in (env.repo_dir / "backups").rglob("*") if p.is_file())
    for path in catalog_files(env):
        path.unlink()

    for args in (["list"], ["info"], ["verify", "repo"], ["backup", "pg"]):
        done = env.hadr(*args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert "neither catalog.json nor catalog.json.copy" in done.stderr, args
        assert "hadr repair catalog" in done.stderr, args
    # the refused backup wrote nothing: no new folder, no fresh catalog hiding the old backups
    assert sorted(p for p in (env.repo_dir / "backups").rglob("*") if p.is_file()) == objects_before
    assert not any(path.exists() for path in catalog_files(env))

    repaired = env.hadr("--json", "repair", "catalog")
    assert repaired.returncode == 0, repaired.stderr
    result = json.loads(repaired.stdout)
    assert sorted(result["added"]) == sorted(before) and result["kept"] == 0
    assert listed(env) == before
    assert env.hadr("verify", "repo").returncode == 0

    to = env.new_restore_dir()
    env.restore(to, latest=True, start=True)
    assert env.sql("select count(*) from item", port=restored_port(to)) == [(200,)]


def test_repair_keeps_what_the_catalog_has_and_adds_only_what_it_lost(env: PgEnv, two_backups) -> None:
    with open_repo(env.policy, write=True) as repo:  # a catalog that lost one entry (an old bug, a bad edit)
        repo.update_catalog(lambda catalog: catalog.remove(two_backups[0]))
    assert two_backups[0] not in listed(env)
    report = env.hadr("--json", "verify", "repo")
    assert report.returncode == 3
    findings = json.loads(report.stdout)["findings"]
    assert {f["code"] for f in findings if f["level"] == "error"} == {"unreferenced-object"}
    assert all(two_backups[0] in f["subject"] for f in findings if f["code"] == "unreferenced-object")

    result = json.loads(env.hadr("--json", "repair", "catalog", check=True).stdout)
    assert result["added"] == [two_backups[0]] and result["kept"] >= 1
    assert listed(env)[two_backups[0]] == "complete"
    assert env.hadr("verify", "repo").returncode == 0


def test_both_catalog_files_damaged_is_repaired_too(env: PgEnv, two_backups) -> None:
    before = listed(env)
    for path in catalog_files(env):
        path.write_bytes(b"garbage")
    done = env.hadr("list")
    assert done.returncode == 1 and "both unreadable" in done.stderr and "repair catalog" in done.stderr
    result = json.loads(env.hadr("--json", "repair", "catalog", check=True).stdout)
    assert result["notes"] and sorted(result["added"]) == sorted(i for i, s in before.items() if s == "complete")
    assert {i: s for i, s in listed(env).items() if s == "complete"} == {
        i: s for i, s in before.items() if s == "complete"
    }


def test_undescribed_folder_is_reported_and_left_alone(env: PgEnv, two_backups) -> None:
    stray = env.repo_dir / "backups" / "pg" / "main" / "20200101T000000Z-pg-dead"
    stray.mkdir(parents=True)
    (stray / "base.tar").write_bytes(b"half a backup from an older hadr")
    try:
        done = env.hadr("--json", "repair", "catalog")
        assert done.returncode == 3
        assert json.loads(done.stdout)["undescribed"] == ["backups/pg/main/20200101T000000Z-pg-dead/"]
        assert (stray / "base.tar").exists()
        report = json.loads(env.hadr("--json", "verify", "repo").stdout)
        assert any(f["code"] == "unreferenced-object" and "pg-dead" in f["subject"] for f in report["findings"])
    finally:
        (stray / "base.tar").unlink()
        stray.rmdir()


def test_old_leftover_of_an_interrupted_write_is_a_finding_and_repair_removes_it(env: PgEnv, two_backups) -> None:
    folder = env.repo_dir / "wal" / "main" / "0000000100000000"
    leftover = folder / f".000000010000000000000099-{'ab' * 32}.4242.0badc0de.tmp"
    leftover.write_bytes(b"half a segment")
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    report = env.hadr("--json", "verify", "repo")
    assert report.returncode == 3
    found = [f for f in json.loads(report.stdout)["findings"] if f["code"] == "leftover-temporary"]
    assert len(found) == 1 and found[0]["level"] == "error" and "000000010000000000000099" in found[0]["subject"]
    result = json.loads(env.hadr("--json", "repair", "catalog", check=True).stdout)
    assert len(result["leftovers_removed"]) == 1 and not leftover.exists()
    assert env.hadr("verify", "repo").returncode == 0
