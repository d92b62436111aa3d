"""The background helpers' command line and logs (postgres/background.py, cli/background.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from hadr_backup.policy.load import parse_policy
from hadr_backup.postgres.background import PREFETCHER, PUSHER, ack_command, helper_command, helper_logs

ROOT = Path(__file__).resolve().parents[2]


def policy_at(path: Path, **source):
    data = {
        "repository": {"path": str(path.parent / "repo")},
        "sources": {"postgres": [{"name": "main", "dsn": "host=127.0.0.1", **source}]},
    }
    path.write_text(yaml.safe_dump(data))
    return parse_policy(data, str(path)), data


def hadr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "hadr_backup", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_a_helper_is_started_with_the_absolute_policy_file_before_its_hidden_subcommand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy, _ = policy_at(tmp_path / "policy.yaml")
    relative = parse_policy(yaml.safe_load((tmp_path / "policy.yaml").read_text()), "policy.yaml")
    source = policy.sources.postgres_named("main")
    for started_with in (policy, relative):
        assert helper_command(started_with, PUSHER, source) == [
            sys.executable,
            "-m",
            "hadr_backup",
            "--policy",
            str(tmp_path / "policy.yaml"),
            "wal-pusher",
            "--source",
            "main",
        ]
    assert helper_command(policy, PREFETCHER, source)[5:] == ["wal-prefetcher", "--source", "main"]
    assert f"--policy {tmp_path / 'policy.yaml'} wal-pusher --source main" in ack_command(policy, source, "full")


def test_the_helpers_are_hidden_from_help_but_run(tmp_path):
    listed = hadr("--help", cwd=tmp_path)
    assert listed.returncode == 0 and "wal-push " in listed.stdout
    assert "wal-pusher" not in listed.stdout and "wal-prefetcher" not in listed.stdout
    for helper in ("wal-pusher", "wal-prefetcher"):
        shown = hadr(helper, "--help", cwd=tmp_path)
        assert shown.returncode == 0 and "--source" in shown.stdout, shown.stderr


def test_a_helper_that_fails_logs_one_timestamped_error_line(tmp_path):
    policy_at(tmp_path / "policy.yaml")
    failed = hadr(
        "--policy",
        str(tmp_path / "policy.yaml"),
        "wal-pusher",
        "--source",
        "other",
        "--pg-wal",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert failed.returncode != 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z error: .*other", failed.stderr), failed.stderr


def test_helper_logs_name_the_files_and_their_last_error_line(tmp_path):
    policy, _ = policy_at(tmp_path / "policy.yaml", spool_dir=str(tmp_path / "spool"))
    source = policy.sources.postgres_named("main")
    pusher, prefetcher = helper_logs(source, None)
    assert (pusher.path, pusher.exists, pusher.last_error) == (str(tmp_path / "spool/main/pusher.log"), False, None)
    assert prefetcher.path == str(tmp_path / "spool/main/prefetch.log")
    (tmp_path / "spool/main").mkdir(parents=True)
    Path(pusher.path).write_text(
        "2026-01-01T00:00:00.000Z error: first\n  hint: do this\n"
        "2026-01-01T00:00:01.000Z error: 000000010000000000000002: second\n  hint: that\n"
        "2026-01-01T00:00:02.000Z pusher: stored 3 file(s), up to 2 at once\n"
    )
    Path(prefetcher.path).write_text("2026-01-01T00:00:02.000Z prefetcher: fetched 8 segment(s)\n")
    pusher, prefetcher = helper_logs(source, None)
    assert pusher.last_error == "2026-01-01T00:00:01.000Z error: 000000010000000000000002: second"
    assert prefetcher.exists and prefetcher.last_error is None

    source = policy_at(tmp_path / "p2.yaml")[0].sources.postgres_named("main")
    assert helper_logs(source, None) == []  # neither spool_dir nor the data directory known
    assert helper_logs(source, "/srv/pg")[0].path == "/srv/pg/pg_wal/.hadr-spool/main/pusher.log"
