"""hadr prune on a repository after a simulated day of hourly PostgreSQL backups (written with injected times,
HADR_NOW as the clock): the GFS table, --dry-run changing nothing, the expired backups and the WAL before the
oldest kept one removed, kill -9 at each step followed by `verify repo` passing and a second prune finishing,
and bad input refused with exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hadr_backup.repo.prune import KILL_AT_ENV
from hadr_backup.timefmt import parse_target_time
from tests.helpers import hadr_cli, write_policy
from tests.integration.prune_support import day_policy, repository_files, segment, write_day
from tests.schema_check import assert_schema

NOW = "2026-12-01 11:30"
GFS = {"hourly": 6, "daily": 3, "weekly": 1, "monthly": 1, "min_full": 1}
KEPT_HOURS = ["11", "10", "09", "08", "07", "06"]  # of 2026-12-01, plus 2026-11-30 23:05 (daily)


def prune(policy_file: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HADR_NOW": NOW}
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), "prune", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def day(tmp_path: Path):
    policy_file = day_policy(tmp_path, **GFS)
    entries = write_day(policy_file, parse_target_time("2026-11-30 12:05").timestamp(), 24)
    return policy_file, entries, tmp_path / "repo"


def verify_passes(policy_file: Path) -> dict:
    done = hadr_cli(policy_file, "--json", "verify", "repo")
    report = assert_schema("verify-repo", done.stdout)
    assert done.returncode == 0 and report["passed"], done.stdout
    return report


def listing(policy_file: Path) -> list[dict]:
    return assert_schema("list", hadr_cli(policy_file, "--json", "list", check=True).stdout)["backups"]


def stored_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (the local driver may leave the empty folder behind)."""
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def expected_kept(entries) -> set[str]:
    kept = {e.id for e in entries if e.id.startswith("20261201T") and e.id[9:11] in KEPT_HOURS}
    return kept | {e.id for e in entries if e.id.startswith("20261130T2305")}


def test_dry_run_prints_the_gfs_table_and_changes_nothing(day) -> None:
    policy_file, entries, repo_dir = day
    before = repository_files(repo_dir)
    done = prune(policy_file, "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["kind", "source", "backup", "instant", "(UTC)", "state", "action", "why"]
    rows = {line.split()[2]: line for line in lines[1:25]}
    assert len(rows) == 24
    newest = rows[entries[-1].id]
    assert newest.split()[6] == "keep"
    assert newest.endswith(
        "hourly 2026-12-01 11h (1 of 6); daily 2026-12-01 (1 of 3); weekly 2026-W49 (1 of 1); monthly 2026-12 (1 of 1)"
    )
    assert rows[entries[11].id].endswith("keep    daily 2026-11-30 (2 of 3)")  # 2026-11-30 23:05
    assert rows[entries[6].id].endswith("expire  not selected by the retention policy")
    assert {i for i, line in rows.items() if line.split()[6] == "keep"} == expected_kept(entries)
    assert "dry run, nothing changed: 17 backups to expire; a prune would remove 62 objects" in done.stdout
    assert "pg main: stream objects no kept backup needs: 11 (" in done.stdout
    assert repository_files(repo_dir) == before  # not a byte changed: not the catalog, not the lock's record


def test_prune_removes_the_expired_backups_and_the_wal_before_the_oldest_kept(day) -> None:
    policy_file, entries, repo_dir = day
    done = prune(policy_file, "--json")
    assert done.returncode == 0, done.stderr
    result = assert_schema("prune", done.stdout)
    assert result["dry_run"] is False and result["now"] == "2026-12-01T11:30:00.000000Z"
    assert set(result["expired"]) == {e.id for e in entries} - expected_kept(entries)
    assert result["removed_objects"] == 17 * 3 + 11 and result["freed_bytes"] > 0
    assert result["stream"][0]["removed_objects"] == 11
    assert {b["id"] for b in listing(policy_file)} == expected_kept(entries)
    # WAL from the oldest kept backup's start (segment 12) on is all there; before it, none; the identity stays
    wal_dir = repo_dir / "wal" / "main"
    names = sorted(p.name.split("-")[0] for p in wal_dir.rglob("0000*") if p.is_file())
    assert names == [segment(n) for n in range(12, 26)]
    assert (wal_dir / "archive.json").is_file()
    for expired in result["expired"]:
        assert not stored_files(repo_dir / "backups" / "pg" / "main" / expired)
    report = verify_passes(policy_file)
    assert report["checked"]["backups"] == 7
    # a second prune has nothing left to do: applying retention to the kept set expires nothing more
    again = assert_schema("prune", prune(policy_file, "--json").stdout)
    assert again["expired"] == [] and again["removed_objects"] == 0


@pytest.mark.parametrize("step", ["marked", "deleted:1", "deleted:26", "stream:1", "stream:11"])
def test_kill_9_at_any_step_leaves_a_verified_repository_and_the_next_prune_finishes(day, step: str) -> None:
    policy_file, entries, repo_dir = day
    killed = prune(policy_file, kill_at=step)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    states = {b["id"]: b["state"] for b in listing(policy_file)}
    expired = {e.id for e in entries} - expected_kept(entries)
    assert {i for i, s in states.items() if s == "expiring"} == expired  # marked before the first delete
    verify_passes(policy_file)
    # restore selection sees only the kept backups
    info = hadr_cli(policy_file, "--json", "info", check=True).stdout
    assert not any(i in info for i in expired)
    finished = prune(policy_file, "--json")
    assert finished.returncode == 0, finished.stderr
    result = assert_schema("prune", finished.stdout)
    assert set(result["expired"]) == expired
    assert all("expiring: a prune began removing it" in b["reasons"] for b in result["backups"] if b["id"] in expired)
    assert {b["id"] for b in listing(policy_file)} == expected_kept(entries)
    assert not any(stored_files(repo_dir / "backups" / "pg" / "main" / i) for i in expired)
    assert verify_passes(policy_file)["checked"]["backups"] == 7


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"keep_within": "a week"}, "retention.keep_within: expected a whole number then s, m, h, d or w"),
        ({"daily": -1}, "retention.daily: expected an integer from 0 to 100000, got int -1"),
        ({"min_full": 0}, "retention.min_full: expected an integer from 1 to 1000, got int 0"),
        ({"yearly": 3}, "retention: unknown key 'yearly'"),
    ],
)
def test_a_bad_retention_policy_is_exit_2_and_changes_nothing(day, tmp_path: Path, retention, message) -> None:
    policy_file, _entries, repo_dir = day
    before = repository_files(repo_dir)
    import yaml

    data = yaml.safe_load(policy_file.read_text())
    bad = write_policy(tmp_path / "bad.yaml", {**data, "retention": retention})
    done = prune(bad)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stdout == ""
    assert repository_files(repo_dir) == before


def test_an_unknown_source_is_exit_2_and_changes_nothing(day) -> None:
    policy_file, _entries, repo_dir = day
    before = repository_files(repo_dir)
    done = prune(policy_file, "--source", "nosuch")
    assert done.returncode == 2
    assert "--source 'nosuch': the policy has no source of that name" in done.stderr
    assert "known sources: main" in done.stderr
    assert repository_files(repo_dir) == before


def test_on_an_s3_repository_a_killed_prune_is_finished_by_the_next(s3_server, s3_bucket, tmp_path: Path) -> None:
    repository = {
        "url": f"s3://{s3_bucket}/hadr",
        "endpoint": s3_server.endpoint_url,
        "access_key": "testing",
        "secret_key": "testing",
    }
    policy_file = day_policy(tmp_path, repository, **GFS)
    entries = write_day(policy_file, parse_target_time("2026-11-30 12:05").timestamp(), 24)
    assert prune(policy_file, kill_at="deleted:7").returncode == -9
    verify_passes(policy_file)
    done = prune(policy_file, "--json")
    assert done.returncode == 0, done.stderr
    assert set(assert_schema("prune", done.stdout)["expired"]) == {e.id for e in entries} - expected_kept(entries)
    assert {b["id"] for b in listing(policy_file)} == expected_kept(entries)
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="hadr/")["Contents"]]
    assert not [k for k in keys if "/backups/" in k and k.split("/")[4] not in expected_kept(entries)]
    wal_names = sorted(k.rsplit("/", 1)[-1].split("-")[0] for k in keys if "/wal/main/0000" in k)
    assert wal_names == [segment(n) for n in range(12, 26)]
    assert verify_passes(policy_file)["checked"]["backups"] == 7
