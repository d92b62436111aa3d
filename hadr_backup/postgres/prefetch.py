"""WAL prefetch for recovery: wal-fetch of segment S starts fetching the next segments in parallel.

wal-fetch of segment S first looks in ``pg_wal/.hadr-prefetch/`` (next to its destination): a file
there was fetched by a background prefetcher, checked against the SHA-256 in its object key, fsynced
and renamed into place, so it is moved to the destination at once. After serving S, a prefetcher is
started for the segments after S on the same timeline when fewer than half of them are there; it
stops at the first segment the archive does not hold. ``.history`` and ``.partial`` files are never
prefetched. ``.requested`` records the newest segment asked for, so a prefetcher skips (and drops)
what recovery has already got past.

The prefetcher is the hidden ``hadr wal-prefetcher``, started under the policy file of the wal-fetch
that starts it; its output goes to ``prefetch.log`` in the source's spool directory of this cluster
(``pg_wal/.hadr-spool/<source>/`` unless ``spool_dir`` is set), which ``hadr info`` names.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from hadr_backup.errors import HadrError
from hadr_backup.fsutil import describe_os_error, fsync_dir
from hadr_backup.postgres import wal, walack
from hadr_backup.postgres.archive import WalFetchResult, load_identity, write_verified
from hadr_backup.postgres.background import PREFETCHER, helper_command, log, log_path, replace_text, take_lock
from hadr_backup.repo.repository import open_repo
from hadr_backup.ui import plural

if TYPE_CHECKING:
    from hadr_backup.policy.model import Policy, PostgresSource


PREFETCH_DIR = ".hadr-prefetch"


def prefetch_dir(dest) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(dest)), PREFETCH_DIR)


def serve_prefetched(
    policy: Policy, source: PostgresSource, name: str, dest: str | os.PathLike, count: int
) -> WalFetchResult | None:
    """Move a prefetched ``name`` to ``dest``; None when it was not prefetched."""
    directory = prefetch_dir(dest)
    if not os.path.isdir(directory):
        return None
    replace_text(os.path.join(directory, ".requested"), name)  # a prefetcher skips this one and older
    _drop_older(directory, name)
    try:
        os.replace(os.path.join(directory, name), dest)
    except FileNotFoundError:
        return None
    fsync_dir(os.path.dirname(os.path.abspath(dest)))
    warning = start_prefetch(policy, source, name, dest, count)
    return WalFetchResult(source.name, name, str(dest), "prefetched", os.path.getsize(dest), warning=warning)


def _drop_older(directory: str, name: str) -> None:
    """Prefetched segments before ``name`` will not be asked for again (recovery moves forward)."""
    for entry in os.listdir(directory):
        stale_temp = (
            entry.startswith(".")
            and entry.endswith(".tmp")
            and time.time() - os.path.getmtime(os.path.join(directory, entry)) > 600
        )
        if stale_temp or (len(entry) == 24 and entry[8:] < name[8:]):
            try:
                os.unlink(os.path.join(directory, entry))
            except FileNotFoundError:
                pass


def start_prefetch(
    policy: Policy, source: PostgresSource, name: str, dest: str | os.PathLike, count: int
) -> str | None:
    """Start a background prefetcher when fewer than half of the next ``count`` segments are there;
    why it could not be started, if so (the fetch itself succeeded: recovery goes on without it)."""
    directory = prefetch_dir(dest)
    try:
        os.makedirs(directory, exist_ok=True)
        ahead = [e for e in os.listdir(directory) if len(e) == 24 and e[:8] == name[:8] and e[8:] > name[8:]]
        if len(ahead) >= max(1, count // 2) or _is_locked(os.path.join(directory, ".lock")):
            return None
        log_file = log_path(source, os.path.dirname(directory), PREFETCHER)
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        argv = [*helper_command(policy, PREFETCHER, source), "--dir", directory, "--after", name, "--count", str(count)]
        walack.spawn_detached(argv, log_file)
    except OSError as error:
        return f"the prefetcher was not started: {describe_os_error(error)}"
    return None


def _requested(directory: str, name: str) -> bool:
    """True when recovery has already asked for ``name`` or a later segment."""
    try:
        with open(os.path.join(directory, ".requested")) as handle:
            requested = handle.read().strip()
    except FileNotFoundError:
        return False
    return len(requested) == 24 and requested[8:] >= name[8:]


def _is_locked(path: str) -> bool:
    fd = take_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def run_prefetcher(policy: Policy, source: PostgresSource, directory: str, after: str, count: int) -> int:
    """Fetch the segments after ``after`` that are archived and not yet in ``directory``."""
    from concurrent.futures import ThreadPoolExecutor  # 3 ms (with logging) that wal-push never needs

    lock = take_lock(os.path.join(directory, ".lock"))
    if lock is None:
        return 0  # another prefetcher runs
    try:
        with open_repo(policy, catalog=False) as repo, ThreadPoolExecutor(max(1, source.archive_workers)) as pool:
            wanted = _wanted(repo, source.name, directory, after, count)
            fetched = sum(pool.map(partial(_fetch, repo, directory), wanted))
        log(f"prefetcher: fetched {plural(fetched, 'segment')} after {after}")
        return fetched
    finally:
        os.close(lock)


def _fetch(repo, directory: str, found: wal.ArchivedFile) -> int:
    if _requested(directory, found.name):
        return 0
    target = Path(directory) / found.name
    try:
        write_verified(repo.read_object(found.key), target, found.sha256, found.name)
    except HadrError as error:
        raise error.amend(prefix=f"cannot prefetch {found.name} ({found.key}): ") from None
    if _requested(directory, found.name):  # recovery got past it meanwhile
        target.unlink(missing_ok=True)
    return 1


def _wanted(repo, source: str, directory: str, after: str, count: int) -> list[wal.ArchivedFile]:
    """The archived segments of the ``count`` after ``after`` that ``directory`` lacks, up to the first
    one the archive does not hold (recovery cannot read past a gap anyway)."""
    identity = load_identity(repo, source)
    size = identity.segment_size if identity else wal.DEFAULT_SEGMENT_SIZE
    names, name = [], after
    for _ in range(count):
        name = wal.next_segment(name, size)
        names.append(name)
    archived = wal.list_archived_for(repo, source, names)
    wanted = []
    for name in names:
        found = archived.find(name)
        if found is None or name in archived.conflicts:
            break
        if not os.path.exists(os.path.join(directory, name)):
            wanted.append(found)
    return wanted
