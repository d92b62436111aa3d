"""Schedules without servers: cron parsing, job names checked at policy load, ticks, the job history,
``hadr schedule exec`` under a lease, crontab lines (parsed back and run through ``sh -c``)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hadr_backup.cli.main import cli
from hadr_backup.errors import PolicyError
from hadr_backup.policy.load import parse_policy
from hadr_backup.repo import layout
from hadr_backup.repo.lock import LeaseLock
from hadr_backup.repo.repository import init_repo, open_repo
from hadr_backup.schedule import history
from hadr_backup.schedule.cron import CronError, parse_cron
from hadr_backup.schedule.timing import latest_tick, longest_gap, next_run, trigger_for
from tests.helpers import local_policy_data, write_policy
from tests.schema_check import assert_schema


def hadr(*args: str):
    return CliRunner().invoke(cli, list(args))


def make_policy(tmp_path: Path, schedules: list[dict], **extra) -> Path:
    data = local_policy_data(tmp_path / "repo", schedules=schedules, **extra)
    path = write_policy(tmp_path / "policy.yaml", data)
    init_repo(parse_policy(data, str(path)))
    return path


# -- cron ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("0 4 * * 0", {"second": "0", "minute": "0", "hour": "4", "day_of_week": "sun"}),
        ("0 4 * * 7", {"day_of_week": "sun"}),
        ("*/15 9-17 * * mon-fri", {"minute": "0,15,30,45", "day_of_week": "mon,tue,wed,thu,fri"}),
        ("0 0 * * 5-7", {"day_of_week": "sun,fri,sat"}),
        ("0 0 1 jan,jul *", {"day": "1", "month": "1,7", "day_of_week": "*"}),
        ("*/5 * * * * *", {"second": "0,5,10,15,20,25,30,35,40,45,50,55", "minute": "*"}),
        ("30 3 * * *", {"second": "0", "minute": "30", "hour": "3"}),
    ],
)
def test_cron_fields_as_apscheduler_reads_them(text: str, fields: dict) -> None:
    parsed = parse_cron(text).trigger_fields()
    assert {k: parsed[k] for k in fields} == fields


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("daily", "1 fields"),
        ("* * * *", "4 fields"),
        ("60 * * * *", "minute field: '60' is outside 0-59"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day field"),
        ("* * * 13 *", "month field"),
        ("* * * * 8", "day_of_week field"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "step"),
        ("0 4 1 * 0", "both day-of-month and day-of-week"),
        ("0 4 ? * *", "not a number"),
    ],
)
def test_bad_cron_is_refused_with_the_field(text: str, why: str) -> None:
    with pytest.raises(CronError, match=why):
        parse_cron(text)


def test_the_weekly_example_runs_on_sunday_in_the_policy_zone() -> None:
    policy = parse_policy(
        {
            "repository": {"path": "/r"},
            "timezone": "Europe/Berlin",
            "schedules": [{"name": "drill", "job": "drill", "cron": "0 4 * * 0"}],
        },
        "p.yaml",
    )
    trigger = trigger_for(policy.schedules[0], policy)
    upcoming = next_run(trigger, datetime(2026, 12, 1, 12, tzinfo=UTC))  # a Tuesday
    assert upcoming.weekday() == 6 and upcoming.hour == 4 and upcoming.utcoffset().total_seconds() == 3600
    assert upcoming.astimezone(UTC).hour == 3
    assert longest_gap(trigger, datetime(2026, 12, 1, tzinfo=UTC)) == 7 * 86400


def test_the_tick_is_the_newest_scheduled_instant_within_the_grace() -> None:
    policy = parse_policy(
        {"repository": {"path": "/r"}, "schedules": [{"name": "p", "job": "prune", "cron": "*/15 * * * *"}]}, "p"
    )
    trigger = trigger_for(policy.schedules[0], policy)
    assert latest_tick(trigger, datetime(2026, 12, 1, 10, 31, 7, tzinfo=UTC)) == datetime(
        2026, 12, 1, 10, 30, tzinfo=UTC
    )
    assert latest_tick(trigger, datetime(2026, 12, 1, 10, 44, tzinfo=UTC), grace=300) is None  # by hand


# -- the policy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "extra", "message"),
    [
        ({"name": "x", "job": "backup mongo", "cron": "0 * * * *"}, {}, "unknown job 'backup mongo'"),
        ({"name": "x", "job": "prune", "cron": "0 4 1 * 0"}, {}, "both day-of-month and day-of-week"),
        ({"name": "two words", "job": "prune", "cron": "0 * * * *"}, {}, "schedules[0].name: expected a name"),
        ({"name": "x", "job": "prune", "cron": "0 * * * *"}, {"timezone": "Mars/Olympus"}, "timezone: expected"),
    ],
)
def test_a_bad_schedule_is_a_policy_error_exit_2_that_changes_nothing(
    tmp_path: Path, schedule: dict, extra: dict, message: str
) -> None:
    good = make_policy(tmp_path, [{"name": "ok", "job": "verify repo", "cron": "0 * * * *"}])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    bad = write_policy(tmp_path / "bad.yaml", local_policy_data(tmp_path / "repo", schedules=[schedule], **extra))
    for args in (["schedule", "list"], ["schedule", "run"], ["schedule", "exec", "x"], ["list"]):
        done = hadr("--policy", str(bad), *args)
        assert done.exit_code == 2, done.output
        assert message in done.stderr and done.stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == sorted([*before, Path("bad.yaml")])
    assert hadr("--policy", str(good), "schedule", "list").exit_code == 0


def test_an_unknown_job_names_the_known_ones() -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(
            {"repository": {"path": "/r"}, "schedules": [{"name": "x", "job": "backup", "cron": "0 * * * *"}]}, "p"
        )
    assert "'backup pg'" in raised.value.hint and "'drill'" in raised.value.hint and raised.value.exit_code == 2


def test_job_names_import_nothing_heavy() -> None:
    code = (
        "import sys, hadr_backup.policy.load; "
        "print(sorted(m for m in sys.modules if m.startswith(('apscheduler', 'prometheus'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- exec, the lease and the history --------------------------------------------------------------------


def test_exec_records_the_run_and_list_shows_it(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, [{"name": "verify", "job": "verify repo", "cron": "0 3 * * *"}])
    listed = assert_schema("schedule-list", hadr("--policy", str(policy), "schedule", "list", "--json").stdout)
    assert listed["schedules"][0]["last"] is None and listed["schedules"][0]["next_run"].endswith("03:00:00.000000Z")
    done = hadr("--policy", str(policy), "--json", "schedule", "exec", "verify")
    assert done.exit_code == 0, done.output
    result = assert_schema("schedule-exec", done.stdout)
    assert result["result"] == "succeeded" and result["output"]["passed"] is True and result["tick"] is None
    (entry,) = assert_schema("schedule-list", hadr("--policy", str(policy), "schedule", "list", "--json").stdout)[
        "schedules"
    ]
    assert entry["last"]["last_result"] == "succeeded" and entry["last"]["runs"] == 1
    assert entry["last"]["last_success"] == result["ended_at"] and entry["last"]["pid"] == os.getpid()
    human = hadr("--policy", str(policy), "schedule", "list").stdout
    assert "verify repo" in human and "succeeded" in human
    info = assert_schema("info", hadr("--policy", str(policy), "info", "--json").stdout)
    assert info["schedules"][0]["last"]["last_result"] == "succeeded" and info["schedules"][0]["cron"] == "0 3 * * *"
    assert "schedule verify (verify repo, 0 3 * * *): succeeded" in hadr("--policy", str(policy), "info").stdout


def test_a_job_that_fails_is_recorded_with_its_error(tmp_path: Path) -> None:
    buckets = {"buckets": [{"name": "items", "endpoint": "http://127.0.0.1:1", "buckets": ["raw-items"]}]}
    policy = make_policy(tmp_path, [{"name": "mirror", "job": "backup s3", "cron": "0 * * * *"}], sources=buckets)
    done = hadr("--policy", str(policy), "--json", "schedule", "exec", "mirror")
    result = assert_schema("schedule-exec", done.stdout)
    assert result["result"] == "failed" and "127.0.0.1:1" in result["error"] and done.exit_code == 2, result
    (entry,) = json.loads(hadr("--policy", str(policy), "schedule", "list", "--json").stdout)["schedules"]
    assert entry["last"]["last_result"] == "failed" and entry["last"]["failures"] == 1
    assert entry["last"]["last_failure"] is not None and entry["last"]["last_success"] is None


def test_a_job_whose_lease_is_held_elsewhere_is_skipped(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, [{"name": "verify", "job": "verify repo", "cron": "0 3 * * *"}])
    with open_repo(parse_policy(json.loads(json.dumps(local_policy_data(tmp_path / "repo"))), "p")) as repo:
        held = LeaseLock(repo.store.inner, layout.job_lease("verify-repo"), ttl=60).acquire()
    try:
        done = hadr("--policy", str(policy), "--json", "schedule", "exec", "verify")
    finally:
        held.release()
    result = assert_schema("schedule-exec", done.stdout)
    assert done.exit_code == 0 and result["result"] == "skipped" and "locked by pid" in result["error"]
    (entry,) = json.loads(hadr("--policy", str(policy), "schedule", "list", "--json").stdout)["schedules"]
    assert entry["last"]["skipped"] == 1 and entry["last"]["runs"] == 0


def test_a_tick_already_run_is_not_run_again(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, [{"name": "verify", "job": "verify repo", "cron": "0 3 * * *"}])
    tick = "2026-12-01T03:00:00Z"
    first = json.loads(hadr("--policy", str(policy), "--json", "schedule", "exec", "verify", "--tick", tick).stdout)
    second = json.loads(hadr("--policy", str(policy), "--json", "schedule", "exec", "verify", "--tick", tick).stdout)
    assert first["result"] == "succeeded" and first["tick"] == "2026-12-01T03:00:00.000000Z"
    assert second["result"] == "skipped" and "already made" in second["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["schedule", "exec", "nope"], "no schedule named 'nope'"),
        (["schedule", "exec", "verify", "--tick", "yesterday"], "--tick 'yesterday'"),
        (["schedule", "exec", "verify", "--tick", "2026-12-01T03:00:00"], "no UTC offset"),
    ],
)
def test_exec_bad_input_exits_2_and_records_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    policy = make_policy(tmp_path, [{"name": "verify", "job": "verify repo", "cron": "0 3 * * *"}])
    done = hadr("--policy", str(policy), *args)
    assert done.exit_code == 2 and message in done.stderr
    assert not (tmp_path / "repo" / layout.SCHEDULE_HISTORY).exists()


def test_history_updates_from_many_writers_are_never_lost(tmp_path: Path) -> None:
    policy_file = make_policy(tmp_path, [])
    policy = parse_policy(local_policy_data(tmp_path / "repo"), str(policy_file))

    def skip_many() -> None:
        with open_repo(policy, write=True, lock=False, catalog=False) as repo:
            for _ in range(10):
                history.skipped(repo, "entry")

    threads = [threading.Thread(target=skip_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open_repo(policy) as repo:
        assert history.read_history(repo)["entry"].skipped == 40


# -- crontab ----------------------------------------------------------------------------------------------


def test_crontab_lines_parse_back_and_run(tmp_path: Path) -> None:
    policy = make_policy(
        tmp_path,
        [
            {"name": "verify", "job": "verify repo", "cron": "*/15 2 * * mon-fri"},
            {"name": "fast", "job": "verify repo", "cron": "*/5 * * * * *"},
        ],
        timezone="Europe/Berlin",
    )
    done = hadr("--policy", str(policy), "--json", "schedule", "crontab", "--lock-dir", str(tmp_path))
    crontab = assert_schema("schedule-crontab", done.stdout)
    assert [e["name"] for e in crontab["left_out"]] == ["fast"] and "CRON_TZ=Europe/Berlin" in crontab["text"]
    (entry,) = crontab["lines"]
    fields, command = entry["line"].split(maxsplit=5)[:5], entry["line"].split(maxsplit=5)[5]
    assert fields == "*/15 2 * * mon-fri".split()
    words = shlex.split(command)
    assert words[:3] == ["flock", "-n", f"{tmp_path}/hadr-verify.lock"]
    assert words[3] == sys.executable and Path(words[3]).is_absolute()
    assert words[4:] == [
        "-m",
        "hadr_backup",
        "--policy",
        str(policy),
        "schedule",
        "exec",
        "verify",
        "--tick",
        "schedule",
    ]
    assert [line for line in crontab["text"].splitlines() if not line.startswith(("#", "CRON_TZ="))] == [entry["line"]]
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300, cwd="/")
    assert ran.returncode == 0, ran.stderr
    (listed,) = json.loads(hadr("--policy", str(policy), "schedule", "list", "--json").stdout)["schedules"][:1]
    assert listed["last"]["last_result"] == "succeeded" and listed["last"]["pid"] != os.getpid()
    with open(tmp_path / "hadr-verify.lock") as held:  # a run still holding the flock: the next one does nothing
        import fcntl

        fcntl.flock(held, fcntl.LOCK_EX)
        blocked = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300, cwd="/")
    assert blocked.returncode == 1
    assert (
        json.loads(hadr("--policy", str(policy), "schedule", "list", "--json").stdout)["schedules"][0]["last"]["runs"]
        == 1
    )
