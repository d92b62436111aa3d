"""What the background helpers of PostgreSQL archiving share: where a source's spool is, the command
line that starts a helper, their state files, locks and logs.

The helpers are hidden ``hadr`` subcommands (``wal-pusher`` for async wal-push, ``wal-prefetcher`` for
wal-fetch; cli/background.py), started detached under the policy file of the process that starts them.
Their stdout and stderr go to ``pusher.log`` and ``prefetch.log`` in the source's spool directory
(``spool_dir/<source>``, by default ``pg_wal/.hadr-spool/<source>`` of the cluster that runs them);
``hadr info`` names both, with the last error line of each.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from hadr_backup.fsutil import durable_write
from hadr_backup.postgres import walack
from hadr_backup.repo import layout
from hadr_backup.timefmt import rfc3339

if TYPE_CHECKING:
    from hadr_backup.policy.model import Policy, PostgresSource

PUSHER = "wal-pusher"  # the hidden hadr subcommands
PREFETCHER = "wal-prefetcher"
LOGS = {PUSHER: walack.PUSHER_LOG, PREFETCHER: "prefetch.log"}  # in the spool
TAIL = 64 << 10  # bytes at the end of a log searched for its last error
_ERROR_LINE = re.compile(r"(?:\S+ )?(?:hadr: )?error: ")


def spool_path(source: PostgresSource, pg_wal: str) -> str:
    """The spool of ``source`` for the cluster whose WAL directory is ``pg_wal``."""
    if source.spool_dir:
        return os.path.join(source.spool_dir, source.name)
    return os.path.join(pg_wal, ".hadr-spool", source.name)


def hadr_argv(policy_path: str | os.PathLike | None, *args: str) -> list[str]:
    """``hadr [--policy <absolute path>] ARGS`` as this interpreter runs it: every command line hadr writes
    for PostgreSQL or starts in the background."""
    policy_args = ["--policy", os.path.abspath(policy_path)] if policy_path is not None else []
    return [sys.executable, "-m", "hadr_backup", *policy_args, *args]


def helper_command(policy: Policy, helper: str, source: PostgresSource) -> list[str]:
    """The argv that starts background ``helper`` for ``source`` under the policy file this process runs
    with, by its absolute path (never looked for again from the data directory it runs in)."""
    return hadr_argv(policy.path, helper, "--source", source.name)


def log_path(source: PostgresSource, pg_wal: str, helper: str) -> str:
    return os.path.join(spool_path(source, pg_wal), LOGS[helper])


def ack_command(policy: Policy, source: PostgresSource, full_command: str) -> str:
    """archive_command for async mode: a shell test, then the lean acknowledger, then ``full_command``.

    The shell test answers for a segment the pusher stored without starting an interpreter: its hard
    link ``link/<name>-<sha256>`` is the very file PostgreSQL asks about (``-ef``: same device and
    inode) and, for a local repository, the object of that name exists. While a pusher runs
    (``pusher.running``) and has reported no error for the segment, the test is repeated every 10 ms
    for up to 0.3 s (``sleep`` costs less than an interpreter); then the acknowledger takes over.
    """
    spool = shlex.quote(spool_path(source, "pg_wal"))  # relative by default: run in the data directory
    lean = [
        sys.executable,
        "-I",
        "-S",
        os.path.abspath(walack.__file__),
        spool_path(source, "pg_wal"),
        policy.repository.path or "-",
        shlex.join(helper_command(policy, PUSHER, source)),
    ]
    stored = ['[ "$1" -ef "$p" ]']
    if policy.repository.path:
        folder = shlex.quote(os.path.join(policy.repository.path, layout.wal_prefix(source.name)).rstrip("/"))
        stored.append(f'[ -e {folder}/"${{n%????????}}"/"${{1##*/}}" ]')
    shell = (
        f'p=%p; n=${{p##*/}}; i=0; while [ ${{#n}} = 24 ]; do set -- {spool}/link/"$n"-*; '
        f"{' && '.join(stored)} && exit 0; [ $i -lt 30 ] && [ -e {spool}/pusher.running ] && "
        f'[ ! -e {spool}/error/"$n" ] || break; i=$((i+1)); sleep 0.01; done; '
    )
    return f'{shell}exec {" ".join(shlex.quote(a) for a in lean)} "$p" {full_command}'


# -- state files and locks -----------------------------------------------------------------------


def replace_text(path: str, text: str) -> None:
    """Replace a state file durably: a reader (and the file after a crash) sees the old or the new text."""
    durable_write(path, text.encode(), mode=0o644)


def take_lock(path: str) -> int | None:
    """A non-blocking exclusive flock on ``path`` (the kernel frees it when the holder dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


# -- logs ----------------------------------------------------------------------------------------


def log(line: str) -> None:
    """A line of the running helper's log (its stderr)."""
    sys.stderr.write(f"{rfc3339(time.time())} {line}\n")
    sys.stderr.flush()


def log_error(message: str) -> None:
    log(f"error: {message}")


@dataclass
class HelperLog:
    """Where a background helper of a source logs, and the last error it logged."""

    helper: str
    path: str
    exists: bool
    last_error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def helper_logs(source: PostgresSource, data_directory: str | None) -> list[HelperLog]:
    """The logs of the pusher and the prefetcher of ``source`` on the cluster in ``data_directory``;
    none when neither spool_dir nor the data directory is known."""
    if not source.spool_dir and not data_directory:
        return []
    pg_wal = os.path.join(data_directory or "", "pg_wal")
    return [_read_log(helper, log_path(source, pg_wal, helper)) for helper in LOGS]


def _read_log(helper: str, path: str) -> HelperLog:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL))
            tail = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return HelperLog(helper, path, False)
    except OSError as error:
        return HelperLog(helper, path, True, f"(cannot read the log: {error.strerror})")
    errors = [line for line in tail.splitlines() if _ERROR_LINE.match(line)]
    return HelperLog(helper, path, True, errors[-1] if errors else None)
