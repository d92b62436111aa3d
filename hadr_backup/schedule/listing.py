"""``hadr schedule list`` and ``hadr schedule crontab``: the policy's schedule entries, when each runs next
and how its last run went; and the same entries as crontab lines for hosts that prefer plain cron."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hadr_backup.policy.model import Policy, Schedule
from hadr_backup.postgres.background import hadr_argv
from hadr_backup.repo.repository import open_repo
from hadr_backup.schedule.cron import parse_cron
from hadr_backup.schedule.history import JobHistory, read_history
from hadr_backup.schedule.timing import next_run, trigger_for
from hadr_backup.timefmt import format_time, rfc3339

DEFAULT_LOCK_DIR = "/run/lock"


@dataclass
class ScheduleEntry:
    schedule: Schedule
    next_run: float | None
    history: JobHistory | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.schedule.name,
            "job": self.schedule.job,
            "cron": self.schedule.cron,
            "next_run": rfc3339(self.next_run),
            "last": self.history.to_json() if self.history is not None else None,
        }

    def row(self) -> list[str]:
        done = self.history
        last = "never run"
        if done is not None and done.last_start is not None:
            last = f"{done.last_result} {format_time(done.last_end or done.last_start)[:19]}"
            if done.last_duration is not None:
                last += f" ({done.last_duration:.1f} s)"
        error = (done.last_error or "") if done is not None else ""
        return [self.schedule.name, self.schedule.job, self.schedule.cron, format_time(self.next_run)[:19], last, error]


@dataclass
class ScheduleList:
    timezone: str
    entries: list[ScheduleEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"timezone": self.timezone, "schedules": [e.to_json() for e in self.entries]}

    def render(self, out) -> None:
        if not self.entries:
            out.line("no schedules in the policy: add schedules: [{name, job, cron}]")
            return
        out.line(f"cron fields are read in {self.timezone}; times below are UTC")
        columns = ["name", "job", "cron", "next run (UTC)", "last run (UTC)", "last error"]
        out.table("schedules", columns, [e.row() for e in self.entries], key_columns=2)


def run_schedule_list(policy: Policy, now: float) -> ScheduleList:
    moment = datetime.fromtimestamp(now, UTC)
    with open_repo(policy, catalog=False) as repo:
        history = read_history(repo)
    listing = ScheduleList(policy.timezone)
    for schedule in policy.schedules:
        upcoming = next_run(trigger_for(schedule, policy), moment)
        listing.entries.append(
            ScheduleEntry(schedule, upcoming.timestamp() if upcoming else None, history.get(schedule.name))
        )
    return listing


# -- crontab ----------------------------------------------------------------------------------------


@dataclass
class Crontab:
    policy_path: str
    timezone: str
    lines: list[tuple[Schedule, str]] = field(default_factory=list)
    left_out: list[tuple[Schedule, str]] = field(default_factory=list)  # (entry, why)

    def text(self) -> str:
        head = [
            f"# hadr schedules of {self.policy_path}: install with `hadr schedule crontab | crontab -`",
            "# each line runs `hadr schedule exec NAME` (lease, job history, log) behind flock -n",
            f"# cron fields are read in {self.timezone}: CRON_TZ sets it for cronie; Debian's cron ignores it",
            "# and reads them in the host's zone, which must then be the same",
            f"CRON_TZ={self.timezone}",
        ]
        body = [line for _schedule, line in self.lines]
        skipped = [f"# {schedule.name}: left out: {why}" for schedule, why in self.left_out]
        return "\n".join(head + body + skipped)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy_path,
            "timezone": self.timezone,
            "lines": [{"name": s.name, "job": s.job, "cron": s.cron, "line": line} for s, line in self.lines],
            "left_out": [{"name": s.name, "job": s.job, "cron": s.cron, "why": why} for s, why in self.left_out],
            "text": self.text() + "\n",
        }

    def render(self, out) -> None:
        out.line(self.text())


def crontab_line(policy: Policy, schedule: Schedule, lock_dir: str) -> str:
    """``<5 fields> flock -n <lock> <python> -m hadr_backup --policy <policy> schedule exec NAME --tick schedule``"""
    command = hadr_argv(policy.path, "schedule", "exec", schedule.name, "--tick", "schedule")
    lock = f"{lock_dir.rstrip('/')}/hadr-{schedule.name}.lock"
    # % ends a crontab command: escape it wherever a path holds one
    words = shlex.join(["flock", "-n", lock, *command]).replace("%", "\\%")
    return f"{parse_cron(schedule.cron).crontab_fields} {words}"


def run_schedule_crontab(policy: Policy, lock_dir: str = DEFAULT_LOCK_DIR) -> Crontab:
    crontab = Crontab(os.path.abspath(policy.path), policy.timezone)
    for schedule in policy.schedules:
        if parse_cron(schedule.cron).has_seconds:
            crontab.left_out.append((schedule, "cron has no seconds field; it runs under `hadr schedule run` only"))
        else:
            crontab.lines.append((schedule, crontab_line(policy, schedule, lock_dir)))
    return crontab
