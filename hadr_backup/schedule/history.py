"""Job history in the repository (``layout.SCHEDULE_HISTORY``): per schedule entry its last start, end,
result, duration and error, and counts of runs, failures and skips.

One small JSON object for every entry, changed by compare-and-swap (re-read and re-applied on a
conflict), so daemons on several hosts and cron lines sharing one repository never lose an update.
``hadr schedule list``, ``hadr info`` and the metrics read it.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hadr_backup.errors import ObjectChanged, RepositoryError
from hadr_backup.repo import layout
from hadr_backup.timefmt import rfc3339

RUNNING, SUCCEEDED, FAILED, INTERRUPTED, SKIPPED = "running", "succeeded", "failed", "interrupted", "skipped"
RESULTS = (RUNNING, SUCCEEDED, FAILED, INTERRUPTED)
CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class JobHistory:
    """What the repository remembers of one schedule entry's runs (instants are Unix times)."""

    schedule: str
    job: str | None = None
    last_start: float | None = None
    last_end: float | None = None
    last_result: str | None = None  # running | succeeded | failed | interrupted
    last_duration: float | None = None
    last_error: str | None = None
    last_success: float | None = None
    last_failure: float | None = None
    last_tick: float | None = None  # the scheduled instant the last run was for (None: run by hand)
    host: str | None = None
    pid: int | None = None
    runs: int = 0
    failures: int = 0
    skipped: int = 0

    @classmethod
    def of(cls, schedule: str, record: dict | None) -> JobHistory:
        known = {k: v for k, v in (record or {}).items() if k in cls.__dataclass_fields__ and k != "schedule"}
        return cls(schedule, **known)

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "schedule"}

    def to_json(self) -> dict[str, Any]:
        times = ("last_start", "last_end", "last_success", "last_failure", "last_tick")
        data = {k: rfc3339(v) if k in times else v for k, v in self.__dict__.items()}
        data["last_duration"] = round(self.last_duration, 3) if self.last_duration is not None else None
        return data


def read_history(repo) -> dict[str, JobHistory]:
    """Every schedule entry's history (an entry never run has none)."""
    record, _token = repo.read_json_versioned(layout.SCHEDULE_HISTORY)
    return {name: JobHistory.of(name, value) for name, value in ((record or {}).get("schedules") or {}).items()}


def update_history(repo, schedule: str, change: Callable[[dict], None]) -> None:
    """Apply ``change`` to the record of ``schedule`` (a dict, empty when new) by compare-and-swap."""
    for attempt in range(CAS_ATTEMPTS):
        record, token = repo.read_json_versioned(layout.SCHEDULE_HISTORY)
        record = record or {"schedules": {}}
        change(record["schedules"].setdefault(schedule, {}))
        try:
            repo.put_json_if(layout.SCHEDULE_HISTORY, record, token=token)
            return
        except ObjectChanged:
            time.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 6)))
    raise RepositoryError(f"the job history kept changing under {CAS_ATTEMPTS} attempts to update it")


def started(repo, schedule: str, job: str, now: float, tick: float | None) -> None:
    def change(entry: dict) -> None:
        entry.update(job=job, last_start=now, last_end=None, last_result=RUNNING, last_duration=None)
        entry.update(last_error=None, last_tick=tick, host=socket.gethostname(), pid=os.getpid())
        entry["runs"] = entry.get("runs", 0) + 1

    update_history(repo, schedule, change)


def ended(repo, schedule: str, result: str, began: float, now: float, error: str | None) -> None:
    def change(entry: dict) -> None:
        entry.update(last_end=now, last_result=result, last_duration=max(0.0, now - began), last_error=error)
        if result == SUCCEEDED:
            entry["last_success"] = now
        else:
            entry["last_failure"] = now
            entry["failures"] = entry.get("failures", 0) + 1

    update_history(repo, schedule, change)


def skipped(repo, schedule: str) -> None:
    update_history(repo, schedule, lambda entry: entry.update(skipped=entry.get("skipped", 0) + 1))
