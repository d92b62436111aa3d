"""Honest, readable output on a real cluster: `list` on 80 columns, `info`'s archive lag (the age of the
oldest commit not archived, or "unknown" and why), `verify repo` saying what it checked, and `restore`
saying how to start, connect to, resume, promote and stop the restored server — each command it prints
is run here as printed."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from hadr_backup.procs import free_port, running_as_root
from hadr_backup.timefmt import format_time
from tests.helpers import hadr_cli, run_in_pty
from tests.integration.pg_support import PgEnv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env():
    env = PgEnv(settings={"autovacuum": "off"})  # no commit but the tests' own while lag is measured
    env.sql("create table item(id int primary key, payload text)")
    env.sql("insert into item select g, md5(g::text) from generate_series(1, 2000) g")
    yield env
    env.close()


@pytest.fixture(scope="module")
def backups(env: PgEnv):
    return [env.backup(), env.backup()]


def test_list_on_80_columns_shows_whole_ids_times_lsns_and_wal(env: PgEnv, backups) -> None:
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(env.policy_path), "list"]
    code, text = run_in_pty(argv, columns=80)
    assert code == 0, text
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, text
    listed = {row["id"]: row for row in json.loads(env.hadr("--json", "list", check=True).stdout)["backups"]}
    for backup in backups:
        assert re.search(rf"^{backup.backup_id}  pg  main  complete$", text, re.MULTILINE), text
        row = listed[backup.backup_id]
        started, stopped = (row[key].replace("T", " ")[:19] for key in ("started_at", "stopped_at"))
        assert f"started (UTC) {started}, stopped (UTC) {stopped}" in text  # whole, to the second
        assert f"LSN {backup.start_lsn} .. {backup.stop_lsn}" in text
        assert f"WAL {backup.start_wal} .. {backup.stop_wal}" in text
    # wide enough, it is a table, still whole
    code, wide = run_in_pty(argv, columns=250)
    assert code == 0 and "┃" in wide and "…" not in wide, wide
    assert all(b.backup_id in wide and b.stop_wal in wide for b in backups)


def test_list_off_a_terminal_has_a_row_per_backup_with_its_wal_range(env: PgEnv, backups) -> None:
    done = env.hadr("list", check=True)
    header = done.stdout.splitlines()[1]
    assert header.split()[-3:] == ["timeline", "LSN", "WAL"]
    for backup in backups:
        row = next(line for line in done.stdout.splitlines() if line.startswith(backup.backup_id))
        assert row.endswith(f"{backup.start_lsn} .. {backup.stop_lsn}  {backup.start_wal} .. {backup.stop_wal}")


def info_archive(env: PgEnv, policy: Path | None = None) -> dict:
    done = hadr_cli(policy or env.policy_path, "--json", "info", check=True)
    return json.loads(done.stdout)["sources"][0]["archive"]


def test_archive_lag_is_the_age_of_the_oldest_commit_not_archived(env: PgEnv, backups) -> None:
    env.sql("insert into item values (0, 'archived')")
    env.switch_and_wait()
    # nothing waits: 0 s, said so
    archive = info_archive(env)
    assert archive["lag_seconds"] == 0 and "unknown" not in archive["lag_basis"]
    # a commit waits in the current segment (no archive_timeout here): its age, not 0
    env.sql("insert into item values (-1, 'first unarchived')")
    committed = env.sql("select extract(epoch from pg_xact_commit_timestamp(xmin))::float8 from item where id = -1")[0][
        0
    ]
    time.sleep(2.5)
    env.sql("insert into item values (-2, 'second unarchived')")
    before = time.time()
    archive = info_archive(env)
    after = time.time()
    assert archive["lag_segments"] == 0 and archive["lag_bytes"] > 0
    assert before - committed - 0.5 <= archive["lag_seconds"] <= after - committed + 0.5, archive
    assert archive["lag_seconds"] >= 2.5
    assert format_time(committed) in archive["lag_basis"]
    text = env.hadr("info", check=True).stdout
    assert re.search(
        r"lag: \d+(\.\d)? (B|KiB) of WAL not archived \(the current segment: archived when it fills or "
        r"archive_timeout passes\); \d+ s: the age of the oldest commit not archived, at "
        + re.escape(format_time(committed)),
        text,
    ), text


def test_archive_lag_that_cannot_be_read_is_unknown_not_zero(env: PgEnv, backups) -> None:
    policy = env.base / "remote-policy.yaml"
    data = yaml.safe_load(env.policy_path.read_text())
    data["sources"]["postgres"][0]["data_dir"] = "/nonexistent/pgdata"  # as from another host
    policy.write_text(yaml.safe_dump(data))
    env.sql("insert into item values (-3, 'waits')")
    archive = info_archive(env, policy)
    assert archive["lag_bytes"] > 0 and archive["lag_seconds"] is None
    assert archive["lag_basis"].startswith("unknown: this host has no /nonexistent/pgdata/pg_wal")
    text = hadr_cli(policy, "info", check=True).stdout
    assert "age of the oldest commit among it unknown: this host has no /nonexistent/pgdata/pg_wal" in text
    assert not re.search(r"lag:.*; 0 s", text)


def test_info_says_what_the_window_means(env: PgEnv, backups) -> None:
    text = env.hadr("info", check=True).stdout
    assert "newest - UTC" not in text and "(no commit found near the end)" not in text
    assert re.search(r"pg main: \d+ complete backups, newest finished \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    window = next(line for line in text.splitlines() if "restorable:" in line)
    assert "(the last archived commit; LSN" in window or "the newest time it reaches is not known" in window


def test_verify_repo_says_what_it_checked_and_what_only_deep_does(env: PgEnv, backups) -> None:
    done = env.hadr("verify", "repo", check=True)
    assert re.search(
        r"^OK +wal-chain: main: WAL continuous from each of the \d+ backups to the newest archived "
        r"segment \(timeline 1\)",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
    assert re.search(
        r"verify repo: PASSED — checked \d+ backups, \d+ objects, \d+ needed objects, \d+ WAL "
        r"segments$",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
    helped = env.hadr("verify", "repo", "--help", check=True).stdout
    assert "WAL continuous" in helped and "Only --deep reads the objects themselves" in helped
    assert re.search(r"--deep\s+Also read every object \(backups and WAL\) back: decrypt", helped)


def kv(stdout: str) -> dict[str, str]:
    """The rows of a kv rendering; a command's explanation "  (...)" cut off."""
    rows = {}
    for line in stdout.splitlines():
        label, _, value = re.match(r"(\S+(?: \S+)?)(\s{2,})(.*)$", line).groups()
        rows[label] = value.split("  (")[0]
    return rows


def run_printed(command: str) -> str:
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    return done.stdout


def wait_for(dsn: str, sql: str, expected, timeout: float = 60) -> None:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
                last = conn.execute(sql).fetchone()[0]
            if last == expected:
                return
        except psycopg.Error as error:
            last = error
        time.sleep(0.2)
    raise AssertionError(f"{sql} gave {last!r}, not {expected!r}")


@pytest.mark.parametrize("how", ["resume", "promote"])
def test_restore_says_how_to_connect_resume_promote_and_stop(env: PgEnv, backups, how: str) -> None:
    to = env.new_restore_dir()
    done = env.hadr(
        "restore", "pg", "--backup", backups[0].backup_id, "--to", str(to), "--start", "--verify", check=True
    )
    rows = kv(done.stdout)
    assert rows["verified"] == "passed: pg_verifybackup found every file as the backup's manifest lists it"
    assert rows["state"] == "paused"
    owner = "runuser -u postgres -- " if running_as_root() else ""
    for label in ("promote", "stop"):
        assert rows[label].startswith(f"{owner}/usr/lib/postgresql/15/bin/pg_ctl -D {to} "), rows[label]
    connect = rows["connect"]
    assert re.fullmatch(r"\S*psql 'host=127\.0\.0\.1 port=\d+ user=postgres dbname=postgres'", connect)
    assert run_printed(connect + " -Atc 'select pg_is_in_recovery()'").strip() == "t"
    assert rows["resume"] == connect + " -c 'select pg_wal_replay_resume()'"
    run_printed(rows[how])  # resume or promote, as printed: recovery ends and the server opens for writes
    dsn = shlex.split(connect)[1]
    wait_for(dsn, "select pg_is_in_recovery()", False)
    run_printed(rows["stop"])
    assert not (to / "postmaster.pid").exists()


def test_restore_without_start_says_how_to_start_it(env: PgEnv, backups) -> None:
    to, port = env.new_restore_dir(), free_port()
    done = env.hadr("restore", "pg", "--backup", backups[0].backup_id, "--to", str(to), "--port", str(port), check=True)
    rows = kv(done.stdout)
    assert rows["state"] == "configured, not started" and "verified" not in rows
    assert "it replays WAL to the target, then pauses there, read-only" in done.stdout
    run_printed(rows["start"])
    wait_for(
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres", "select pg_get_wal_replay_pause_state()", "paused"
    )
    env.stop_restored(to)
