"""Operations on the sandbox (one sandbox for the module, on free ports, torn down at the end):

1. ``hadr schedule run --metrics-port P`` with real jobs on one-second crons against the sandbox's servers
   (Redis snapshots and the bucket mirror every 2 s, one PostgreSQL base backup): /metrics passes
   ``promtool check metrics`` and carries each job's last success and each source's backups; SIGTERM
   stops it with exit 0; ``hadr schedule list --json`` remembers the succeeded runs.
2. A day of hourly snapshots of the sandbox's Redis ``cache`` (copies of a real snapshot, given hourly
   instants), then ``HADR_NOW=<end of that day> hadr prune --dry-run`` on the sandbox's repository: the
   GFS table, nothing changed, ``hadr verify repo`` still passing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from hadr_backup.policy.load import load_policy
from hadr_backup.procs import free_port, stop_pid, wait_until
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import COMPLETE, BackupEntry, new_backup_id
from hadr_backup.repo.repository import open_repo
from tests.helpers import write_policy
from tests.integration.prune_support import repository_files
from tests.integration.sandbox_support import REPO_ROOT, sandbox_place
from tests.schema_check import assert_schema
from tests.unit.test_alerts import promtool

pytestmark = pytest.mark.integration
HOUR = 3600.0


@dataclass
class Sandbox:
    folder: Path
    env: dict[str, str]

    @property
    def policy(self) -> Path:
        return self.folder / "policy.yaml"

    def hadr(self, *args: str, policy: Path | None = None, env: dict | None = None, timeout: float = 300):
        argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy or self.policy), *args]
        return subprocess.run(
            argv,
            env={**self.env, **(env or {})},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def catalog(self, policy: Path | None = None) -> list[BackupEntry]:
        with open_repo(load_policy(str(policy or self.policy))) as repo:
            return list(repo.catalog.entries)


@pytest.fixture(scope="module")
def sandbox():
    """The sandbox up on free ports in a temp folder (traversable by the postgres OS user); down at the end."""
    parent, folder, _ports, env = sandbox_place("hadr-ops-")

    def sandbox_cli(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "hadr_backup", "sandbox", *args, "--dir", str(folder)]
        return subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)

    try:
        up = sandbox_cli("up", "--json")
        assert up.returncode == 0, up.stdout + up.stderr
        assert assert_schema("sandbox-up", up.stdout)["seeded"] is True
        yield Sandbox(folder, env)
    finally:
        run_dir = folder / "run"
        pids = [int(p.read_text()) for p in run_dir.glob("*.pid")] if run_dir.exists() else []
        sandbox_cli("down")
        for pid in pids:  # in case down itself failed
            stop_pid(pid, timeout=5)
        shutil.rmtree(parent, ignore_errors=True)


# -- 1. the daemon ----------------------------------------------------------------------------------------


def ops_policy(sandbox: Sandbox) -> Path:
    """The sandbox's policy with its schedules on one-second crons: Redis and the bucket every 2 s, a
    PostgreSQL base backup once (at one second of the hour, a few seconds from now)."""
    data = yaml.safe_load(sandbox.policy.read_text())
    once = datetime.now(UTC) + timedelta(seconds=8)
    data["schedules"] = [
        {"name": "redis-snapshot", "job": "backup redis", "cron": "*/2 * * * * *"},
        {"name": "s3-mirror", "job": "backup s3", "cron": "*/2 * * * * *"},
        {"name": "pg-base-backup", "job": "backup pg", "cron": f"{once.second} {once.minute} * * * *"},
    ]
    return write_policy(sandbox.folder.parent / "ops-policy.yaml", data)


def complete(entries: list[BackupEntry], kind: str, source: str) -> list[BackupEntry]:
    return [e for e in entries if e.kind == kind and e.source == source and e.state == COMPLETE]


LEAST = (("redis", "cache", 2), ("redis", "queues", 2), ("s3", "data-items", 2), ("pg", "main", 1))


def counted(samples: dict[str, float]) -> bool:
    """The metrics count at least LEAST complete backups of each source (they are read a moment late)."""
    return all(samples.get(f'hadr_backups_complete{{kind="{k}",source="{s}"}}', 0) >= n for k, s, n in LEAST)


def samples_of(scraped: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines() if line[:1] != "#"}


def test_the_daemon_runs_real_jobs_on_the_sandbox_and_its_metrics_say_so(sandbox: Sandbox) -> None:
    policy = ops_policy(sandbox)
    port = free_port()
    began = time.time()
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy), "schedule", "run"]
    daemon = subprocess.Popen(
        [*argv, "--metrics-port", str(port)],
        env=sandbox.env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            return answer.read().decode()

    def enough() -> bool:
        entries = sandbox.catalog(policy)
        return (
            len(complete(entries, "redis", "cache")) >= 2
            and len(complete(entries, "s3", "data-items")) >= 2
            and len(complete(entries, "pg", "main")) >= 1
        )

    try:
        assert wait_until(enough, 240, interval=1), [(e.kind, e.source, e.state) for e in sandbox.catalog(policy)]
        assert wait_until(lambda: counted(samples_of(scrape())), 120, interval=1), scrape()
        scraped = scrape()
    finally:
        if daemon.poll() is None:
            daemon.send_signal(15)
        out, err = daemon.communicate(timeout=180)
    assert daemon.returncode == 0, err
    checked = promtool("check", "metrics", stdin=scraped)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    samples, now = samples_of(scraped), time.time()
    assert samples["hadr_scheduler_up"] == 1 and samples["hadr_repository_up"] == 1
    for schedule, job in (
        ("redis-snapshot", "backup redis"),
        ("s3-mirror", "backup s3"),
        ("pg-base-backup", "backup pg"),
    ):
        assert began < samples[f'hadr_job_last_success_timestamp_seconds{{job="{job}",schedule="{schedule}"}}'] < now
    assert samples['hadr_job_interval_seconds{job="backup redis",schedule="redis-snapshot"}'] == 2
    assert samples['hadr_job_interval_seconds{job="backup pg",schedule="pg-base-backup"}'] == 3600
    assert counted(samples)
    for kind, source, _least in LEAST:
        labels = f'{{kind="{kind}",source="{source}"}}'
        assert began < samples[f"hadr_backup_last_completed_timestamp_seconds{labels}"] < now, labels
        assert samples[f"hadr_backup_last_stored_bytes{labels}"] > 0, labels
        assert samples[f"hadr_backup_stored_bytes{labels}"] >= samples[f"hadr_backup_last_stored_bytes{labels}"]
    assert began < samples['hadr_restorable_window_end_timestamp_seconds{kind="redis",source="cache"}'] < now
    # its JSON lines: a start, runs that ended (the one SIGTERM met may read interrupted), a stop
    lines = [assert_schema("schedule-run", line) for line in out.splitlines() if line.strip()]
    assert lines[0]["event"] == "scheduler-start" and lines[-1]["event"] == "scheduler-stop"
    ends = [line for line in lines if line["event"] == "job-end"]
    assert {e["schedule"] for e in ends if e["outcome"] == "succeeded"} == {
        "redis-snapshot",
        "s3-mirror",
        "pg-base-backup",
    }
    assert all(e["outcome"] in ("succeeded", "interrupted") for e in ends), ends
    # the repository remembers the runs: `schedule list --json`
    listed = sandbox.hadr("--json", "schedule", "list", policy=policy)
    assert listed.returncode == 0, listed.stderr
    history = {s["name"]: s["last"] for s in assert_schema("schedule-list", listed.stdout)["schedules"]}
    for name in ("redis-snapshot", "s3-mirror", "pg-base-backup"):
        last = history[name]
        assert last["last_result"] in ("succeeded", "interrupted") and last["last_success"] is not None, last
        assert last["runs"] >= 1 and last["failures"] <= 1, last
    assert history["redis-snapshot"]["runs"] >= 2 and history["s3-mirror"]["runs"] >= 2
    entries = sandbox.catalog(policy)
    assert not [e for e in entries if e.state == "running"]
    assert len(complete(entries, "pg", "main")) == 1  # once an hour: it ran once


# -- 2. a day of snapshots, and prune --dry-run -----------------------------------------------------------


def copy_backup(repo, original: BackupEntry, when: float) -> BackupEntry:
    """``original`` (a complete backup) again, as if taken at ``when``: its objects copied under a new id,
    its instants shifted by the same amount, its description written as the backup writes it."""
    shift = when - original.consistent_at
    backup_id = new_backup_id(original.kind, when)
    data = json.loads(json.dumps(original.to_json()).replace(original.id, backup_id))
    for name in ("started_at", "stopped_at", "consistent_at", "heartbeat_at"):
        if data.get(name) is not None:
            data[name] += shift
    for name, value in data["meta"].items():
        if name.endswith("_at") and isinstance(value, float):
            data["meta"][name] = value + shift
    entry = BackupEntry.from_json(data)
    for copied, stored in zip(entry.objects, original.objects, strict=True):
        assert repo.put_object(copied.key, repo.read_object(stored.key, sha256=stored.sha256)) is not None
    repo.put_json(layout.backup_description(entry.kind, entry.source, entry.id), entry.to_json())
    return entry


def write_day_of_snapshots(policy_file: Path, first: float, hours: int) -> list[BackupEntry]:
    policy = load_policy(str(policy_file))
    with open_repo(policy, write=True) as repo:
        (original, *_older) = sorted(
            complete(repo.catalog.entries, "redis", "cache"), key=lambda e: e.consistent_at, reverse=True
        )
        entries = [copy_backup(repo, original, first + i * HOUR) for i in range(hours)]
        repo.update_catalog(lambda catalog: [catalog.add(e) for e in entries])
    return entries


def outside_the_wal_archive(files: dict[str, bytes]) -> dict[str, bytes]:
    """The running server's archive_command may push WAL at any time: prune's doing is judged elsewhere."""
    return {name: content for name, content in files.items() if not name.startswith("wal/")}


def test_prune_dry_run_after_a_day_of_snapshots_prints_the_gfs_table(sandbox: Sandbox) -> None:
    real = sandbox.hadr("--json", "backup", "redis", "--source", "cache")
    assert real.returncode == 0, real.stderr
    cache_before = complete(sandbox.catalog(), "redis", "cache")
    newest_real = max(cache_before, key=lambda e: e.consistent_at)
    # 1. the day: 24 hourly snapshots two days from now, 00:05 to 23:05 UTC; its end is the clock
    day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=5, second=0, microsecond=0)
    entries = write_day_of_snapshots(sandbox.policy, day.timestamp(), 24)
    today = datetime.fromtimestamp(newest_real.consistent_at, UTC).strftime("%Y-%m-%d")
    repo_dir = sandbox.folder / "repo"
    before = repository_files(repo_dir)
    # 2. the dry run: the table, the totals, not a byte changed
    now = {"HADR_NOW": f"{day:%Y-%m-%d} 23:30"}
    done = sandbox.hadr("prune", "--dry-run", env=now)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["kind", "source", "backup", "instant", "(UTC)", "state", "action", "why"]
    rows = {line.split()[2]: line for line in lines[1:] if line.startswith("redis") and line.split()[1] == "cache"}
    assert set(rows) == {e.id for e in entries} | {e.id for e in sandbox.catalog() if e.source == "cache"}
    newest = rows[entries[-1].id]
    assert (
        newest.split()[6] == "keep" and f"hourly {day:%Y-%m-%d} 23h (1 of 24); daily {day:%Y-%m-%d} (1 of 7)" in newest
    )
    for hours_back, entry in enumerate(reversed(entries), start=1):
        assert f"keep    hourly {day:%Y-%m-%d} {entry.id[9:11]}h ({hours_back} of 24)" in rows[entry.id]
    assert f"keep    daily {today} (2 of 7)" in rows[newest_real.id]  # the hours are the day's
    newer = {e.id for e in entries} | {newest_real.id}
    older = [e for e in sandbox.catalog() if e.source == "cache" and e.id not in newer]
    assert older and all(rows[e.id].split()[6] == "expire" for e in older)
    assert all(rows[e.id].endswith("not selected by the retention policy") for e in older if e.state == COMPLETE)
    expiring = [line for line in lines[1:] if len(line.split()) > 6 and line.split()[6] == "expire"]
    assert f"dry run, nothing changed: {len(expiring)} backups to expire; a prune would remove " in done.stdout
    after = repository_files(repo_dir)
    assert outside_the_wal_archive(after) == outside_the_wal_archive(before)
    assert all(after[name] == content for name, content in before.items())  # WAL too: added to, never changed
    # 3. the JSON twin agrees, and the repository still verifies (the copies' objects read back whole)
    result = assert_schema("prune", sandbox.hadr("--json", "prune", "--dry-run", env=now).stdout)
    assert result["dry_run"] is True and set(result["expired"]) >= {e.id for e in older}
    assert not set(result["expired"]) & {e.id for e in entries}
    verified = sandbox.hadr("--json", "verify", "repo")
    report = assert_schema("verify-repo", verified.stdout)
    assert verified.returncode == 0 and report["passed"], verified.stdout
    assert report["checked"]["backups"] >= len(entries) + len(cache_before)
