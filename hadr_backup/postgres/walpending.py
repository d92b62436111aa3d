"""The age of the oldest commit not archived yet: the archive lag in seconds, read where that WAL lies.

What is lost if the cluster's disk dies now is every commit after the end of the newest archived
segment. Their times are in the WAL itself, and nowhere else: the cluster knows when its newest commit
happened (``pg_last_committed_xact()``, with ``track_commit_timestamp``) but not whether an older one is
still waiting, and the archiver knows when it last archived, which says nothing about commits written
since (a quiet cluster waits ``archive_timeout`` with commits in its current segment). So hadr decodes
the unarchived WAL in the cluster's ``pg_wal`` with ``pg_waldump``: that needs hadr to run on the
database host as root or the server's OS user. Elsewhere the age is unknown, and said so — never 0.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hadr_backup.postgres import wal
from hadr_backup.postgres.waldecode import COMMIT, parse_waldump
from hadr_backup.timefmt import format_time

RECORD_LIMIT = 1000  # transaction records decoded at most; the oldest commit is almost always among the first


@dataclass(frozen=True)
class Pending:
    """``seconds``: age of the oldest unarchived commit (0: none waits; None: unknown); ``basis``: how it was
    measured, or why it could not be."""

    seconds: float | None
    basis: str


def oldest_unarchived_commit(
    bin_dir: str,
    pg_wal: Path,
    timeline: int,
    archived_end: int,
    current_lsn: int,
    segment_size: int,
    system_identifier: int | None,
    now: float,
) -> Pending:
    """Decode the WAL from ``archived_end`` (the end of the newest archived segment) to ``current_lsn`` in
    ``pg_wal`` on ``timeline``, and return the age of its first commit."""
    if current_lsn <= archived_end:
        return Pending(0.0, "nothing waits to be archived")
    first = pg_wal / wal.segment_name(timeline, archived_end, segment_size)
    problem = _not_ours(first, pg_wal, system_identifier)
    if problem:
        return Pending(None, f"unknown: {problem}")
    argv = [
        os.path.join(bin_dir, "pg_waldump"),
        "-p",
        str(pg_wal),
        "-t",
        str(timeline),
        "-s",
        wal.format_lsn(archived_end),
        "-e",
        wal.format_lsn(current_lsn),
        "-r",
        "Transaction",
        "-n",
        str(RECORD_LIMIT),
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Pending(None, f"unknown: pg_waldump could not read {pg_wal}: {error}")
    commits = [record for record in parse_waldump(done.stdout) if record.kind == COMMIT and record.time]
    if commits:
        oldest = min(commits, key=lambda record: record.lsn)
        return Pending(
            max(0.0, now - oldest.time.timestamp()),
            f"the age of the oldest commit not archived, at {format_time(oldest.time)} (LSN "
            f"{wal.format_lsn(oldest.lsn)}), read from {pg_wal}",
        )
    decoded = done.stdout.count("rmgr: ")
    if done.returncode == 0 and decoded < RECORD_LIMIT:
        return Pending(0.0, f"no commit among the WAL not archived (read from {pg_wal})")
    why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"no commit in {decoded} records"
    return Pending(None, f"unknown: pg_waldump could not find the oldest unarchived commit in {pg_wal}: {why}")


def _not_ours(first: Path, pg_wal: Path, system_identifier: int | None) -> str | None:
    """Why ``first`` cannot be read as this cluster's WAL (None: it can)."""
    try:
        with open(first, "rb") as segment:
            header = wal.read_segment_header(segment.read(wal.SEGMENT_HEADER_SIZE))
    except FileNotFoundError:
        where = "this host has no " + str(pg_wal) if not pg_wal.exists() else f"{first.name} is not in {pg_wal}"
        return f"{where} (hadr reads the unarchived WAL where the cluster keeps it: run hadr info on its host)"
    except PermissionError:
        return f"{first} is not readable here (run hadr info as root or as the server's OS user)"
    except (OSError, wal.WalNameError) as error:
        return f"{first} cannot be read as WAL: {error}"
    if system_identifier is not None and header.system_identifier != system_identifier:
        return f"{pg_wal} holds the WAL of another cluster (system identifier {header.system_identifier})"
    return None
