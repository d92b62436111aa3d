"""What ``hadr wal-push`` (archive_command) and ``hadr wal-fetch`` (restore_command) run.

wal-push stores the file itself (sync mode) or through the spool and its background pusher (async
mode, spool.py); wal-fetch serves a segment that the background prefetcher already fetched, or fetches
it (archive.py), then starts the prefetcher for the segments after it (prefetch.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hadr_backup.errors import HadrError, UsageError
from hadr_backup.postgres import wal
from hadr_backup.postgres.archive import (
    WalFetchFailed,
    WalFetchResult,
    WalPushResult,
    fetch_with_retries,
    push_opening_repo,
    read_wal_file,
)
from hadr_backup.postgres.prefetch import serve_prefetched, start_prefetch
from hadr_backup.postgres.spool import push_through_spool

if TYPE_CHECKING:
    from hadr_backup.policy.model import Policy


def run_wal_push(policy: Policy, source_name: str | None, path: str | os.PathLike) -> WalPushResult:
    """archive_command: store ``path`` in the repository (sync), or through the spool (async)."""
    started = time.monotonic()
    source = policy.sources.postgres_named(source_name)
    if source.async_archive:
        return push_through_spool(policy, source, Path(path))
    wal_file = read_wal_file(path)
    outcome = push_opening_repo(policy, source.name, wal_file)
    return WalPushResult(
        source.name,
        outcome.name,
        "already archived" if outcome.already_archived else "stored",
        outcome.key,
        outcome.sha256,
        outcome.raw_size,
        outcome.stored_size,
        time.monotonic() - started,
        [],
        outcome.attempts,
    )


def run_wal_fetch(
    policy: Policy,
    source_name: str | None,
    name: str,
    dest: str | os.PathLike,
    *,
    attempts: int = 3,
    retry_delay: float = 1.0,
    prefetch: int = 8,
) -> WalFetchResult:
    """restore_command: fetch ``name`` to ``dest``; any failure but a confirmed absence raises
    WalFetchFailed after ``attempts`` tries."""
    dest = Path(dest)
    try:
        source = policy.sources.postgres_named(source_name)
        if not wal.is_wal_file(name):
            raise UsageError(f"{name!r} is not a WAL file name")
    except HadrError as error:
        raise WalFetchFailed(f"cannot fetch {name}: {error}") from None
    if prefetch and wal.is_segment(name):
        served = serve_prefetched(policy, source, name, dest, prefetch)
        if served is not None:
            return served
    result = fetch_with_retries(policy, source.name, name, dest, attempts, retry_delay)
    if prefetch and result.found and wal.is_segment(name):
        result.warning = start_prefetch(policy, source, name, dest, prefetch)
    return result
