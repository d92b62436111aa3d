"""``hadr schedule run`` as a process against real servers: jobs on a one-second cron, their history and
metrics, SIGTERM between and in the middle of a job, and two daemons sharing one S3 repository.

The daemon is started exactly as the container's entrypoint starts it (``hadr schedule run
--metrics-port P``); what it says on stdout are JSON lines (stdout is a pipe here)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hadr_backup.policy.load import load_policy
from hadr_backup.procs import free_port, wait_until
from hadr_backup.repo import layout
from hadr_backup.repo.repository import init_repo, open_repo
from hadr_backup.schedule.history import read_history
from tests.helpers import write_policy
from tests.schema_check import assert_schema
from tests.unit.test_alerts import promtool

EVERY_SECOND = "* * * * * *"


def redis_policy(path: Path, repository: dict, redis_url: str, cron: str = EVERY_SECOND) -> Path:
    data = {
        "repository": repository,
        "sources": {"redis": [{"name": "cache", "url": redis_url}]},
        "schedules": [
            {"name": "snap", "job": "backup redis", "cron": cron},
            {"name": "nightly-verify", "job": "verify repo", "cron": "0 3 * * *"},
        ],
    }
    write_policy(path, data)
    init_repo(load_policy(str(path)))
    return path


class Daemon:
    def __init__(self, policy: Path, *args: str):
        self.port = free_port()
        argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy), "schedule", "run"]
        self.process = subprocess.Popen(
            [*argv, "--metrics-port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as answer:
            return answer.read().decode()

    def stop(self, timeout: float = 120) -> tuple[int, list[dict], str]:
        """SIGTERM; (exit code, the JSON lines it printed, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, [json.loads(line) for line in out.splitlines() if line.strip()], err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def history_of(policy: Path) -> dict:
    with open_repo(load_policy(str(policy)), catalog=False) as repo:
        return read_history(repo)


def complete_backups(policy: Path) -> list:
    with open_repo(load_policy(str(policy))) as repo:
        return repo.catalog.select(kind="redis", source="cache", state="complete")


def test_jobs_run_on_a_one_second_cron_with_history_metrics_and_a_clean_stop(tmp_path: Path, redis_factory) -> None:
    server = redis_factory(extra={"repl-diskless-sync-delay": "0"})
    policy = redis_policy(tmp_path / "policy.yaml", {"path": str(tmp_path / "repo")}, server.url)
    daemon = Daemon(policy)
    try:
        assert wait_until(lambda: len(complete_backups(policy)) >= 2, 180), "no two backups within 180 s"
        assert wait_until(lambda: "hadr_backups_complete" in daemon.scrape(), 60)
        scraped = daemon.scrape()
        health = subprocess.run(
            [sys.executable, "-m", "hadr_backup", "schedule", "health", "--metrics-port", str(daemon.port), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        code, lines, err = daemon.stop()
    assert code == 0, err
    assert health.returncode == 0 and assert_schema("schedule-health", health.stdout)["healthy"] is True
    checked = promtool("check", "metrics", stdin=scraped)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines() if line[:1] != "#"
    }
    assert samples["hadr_scheduler_up"] == 1
    assert samples['hadr_job_last_success_timestamp_seconds{job="backup redis",schedule="snap"}'] > time.time() - 300
    assert samples['hadr_backups_complete{kind="redis",source="cache"}'] >= 1
    assert samples['hadr_restorable_window_end_timestamp_seconds{kind="redis",source="cache"}'] > time.time() - 300
    assert samples['hadr_job_interval_seconds{job="verify repo",schedule="nightly-verify"}'] == 86400
    for line in lines:
        assert_schema("schedule-run", line)
    events = [line["event"] for line in lines]
    assert events[0] == "scheduler-start" and events[-1] == "scheduler-stop"
    ends = [line for line in lines if line["event"] == "job-end"]
    assert len(ends) >= 2 and all(e["schedule"] == "snap" for e in ends)
    assert all(e["outcome"] == "succeeded" for e in ends[:-1])  # the last one may have met the SIGTERM
    assert ends[-1]["outcome"] in ("succeeded", "interrupted")
    assert events.count("job-start") == len(ends)  # every run that started was seen to end
    snap = history_of(policy)["snap"]
    assert snap.last_result == ends[-1]["outcome"] and snap.runs >= len(ends) - 1
    assert snap.failures == (ends[-1]["outcome"] == "interrupted")
    with open_repo(load_policy(str(policy))) as repo:
        complete = repo.catalog.select(kind="redis", source="cache", state="complete")
        assert len(complete) >= 2 and not repo.catalog.select(state="running")
        assert not list(repo.store.list(layout.JOB_LEASES))  # every lease released


def test_sigterm_in_the_middle_of_a_job_fails_it_cleanly_and_exits_0(tmp_path: Path, redis_factory) -> None:
    # the server waits 20 s before it starts a snapshot: the job is surely under way when SIGTERM comes
    server = redis_factory(extra={"repl-diskless-sync": "yes", "repl-diskless-sync-delay": "20"})
    policy = redis_policy(tmp_path / "policy.yaml", {"path": str(tmp_path / "repo")}, server.url)
    daemon = Daemon(policy)
    try:

        def running() -> bool:
            with open_repo(load_policy(str(policy))) as repo:
                return bool(repo.catalog.select(state="running"))

        assert wait_until(running, 120), "the backup never started"
    finally:
        began = time.monotonic()
        code, lines, err = daemon.stop()
    assert code == 0, err
    assert time.monotonic() - began < 20  # stopped, not waited out
    (end,) = [line for line in lines if line["event"] == "job-end"]
    assert end["outcome"] == "interrupted" and "SIGTERM" in end["error"]
    snap = history_of(policy)["snap"]
    assert snap.last_result == "interrupted" and snap.last_end is not None
    with open_repo(load_policy(str(policy))) as repo:
        (entry,) = repo.catalog.select(kind="redis")
        assert entry.state == "failed" and "SIGTERM" in (entry.error or "")
        assert not list(repo.store.list(layout.backup_prefix("redis", "cache", entry.id)))  # nothing half-written
        assert not list(repo.store.list(layout.JOB_LEASES))


def test_two_daemons_on_one_s3_repository_never_run_a_job_at_once(
    tmp_path: Path, s3_server, s3_bucket, redis_server
) -> None:
    repository = {
        "url": f"s3://{s3_bucket}/hadr",
        "endpoint": s3_server.endpoint_url,
        "access_key": "testing",
        "secret_key": "testing",
        "lock_ttl": 10,
    }
    policy = redis_policy(tmp_path / "policy.yaml", repository, redis_server.url, cron="*/2 * * * * *")
    started = [Daemon(policy) for _ in range(2)]
    try:

        def enough() -> bool:
            snap = history_of(policy).get("snap")
            return snap is not None and snap.skipped >= 2 and len(complete_backups(policy)) >= 3

        assert wait_until(enough, 240, interval=1), f"history: {history_of(policy).get('snap')}"
    finally:
        results = [daemon.stop() for daemon in started]
    assert all(code == 0 for code, _lines, _err in results), [err for _c, _l, err in results]
    outcomes = [line["outcome"] for _c, lines, _e in results for line in lines if line["event"] == "job-end"]
    assert "skipped" in outcomes and "succeeded" in outcomes and "failed" not in outcomes
    with open_repo(load_policy(str(policy))) as repo:
        backups = sorted(repo.catalog.select(kind="redis", source="cache"), key=lambda e: e.started_at)
    assert len([e for e in backups if e.state == "complete"]) >= 3  # a run met by the SIGTERM: failed
    for earlier, later in zip(backups, backups[1:], strict=False):
        assert earlier.stopped_at <= later.started_at, f"{earlier.id} and {later.id} ran at once"
    assert len({e.meta.get("snapshot_at") for e in backups}) == len(backups)
