"""The jobs a schedule can name (``schedules[].job``), and the function each one runs.

Importing this module imports nothing else (the policy loader checks job names against ``JOBS``); a job's
function is imported only when it runs. Every function takes an ``EngineContext`` and returns a result
value (``to_json``, ``render``; a non-zero ``exit_code`` on it means the job found a problem), calling the
same ``run_*`` function as the command line it mirrors.
"""

from __future__ import annotations

import importlib
from typing import Any

# job -> ("module:function", what it does)
JOBS: dict[str, tuple[str, str]] = {
    "backup pg": ("hadr_backup.schedule.runners:backup_pg", "hadr backup pg, for every PostgreSQL source"),
    "backup redis": ("hadr_backup.schedule.runners:backup_redis", "hadr backup redis, for every Redis source"),
    "backup s3": ("hadr_backup.schedule.runners:backup_s3", "hadr backup s3, for every bucket source"),
    "backup all": ("hadr_backup.schedule.runners:backup_all", "a backup of every source the policy lists"),
    "archive redis": (
        "hadr_backup.schedule.runners:archive_redis",
        "hadr archive redis (one pass), for every Redis source with an aof_dir",
    ),
    "prune": ("hadr_backup.schedule.runners:prune", "hadr prune: retention"),
    "verify repo": ("hadr_backup.schedule.runners:verify_repo", "hadr verify repo"),
    "check": ("hadr_backup.schedule.runners:check", "hadr check, every source"),
    "drill": ("hadr_backup.schedule.drill:run_drill", "restore the newest backup of each source into scratch"),
}


def known_jobs() -> str:
    return ", ".join(repr(name) for name in JOBS)


def job_function(job: str) -> Any:
    """The function that runs ``job`` (a name in JOBS)."""
    module, attribute = JOBS[job][0].split(":")
    return getattr(importlib.import_module(module), attribute)


def job_slug(job: str) -> str:
    """``backup pg`` -> ``backup-pg``: the job's name where a key or a file name needs one word."""
    return "-".join(job.split())
