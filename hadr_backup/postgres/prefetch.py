"""WAL prefetch for recovery: wal-fetch of segment S starts fetching the next segments in parallel.

wal-fetch of segment S first looks in ``pg_wal/.hadr-prefetch/`` (next to its destination): a file
there was fetched by a background prefetcher, checked against the SHA-256 in its object key, fsynced
and renamed into place, so it is moved to the destination at once. After serving S, a prefetcher is
started for the segments after S on the same timeline when fewer than half of them are there; it
stops at the first segment the archive does not hold. ``.history`` and ``.partial`` files are never
prefetched. ``.requested`` records the newest segment asked for, so a prefetcher skips (and drops)
what recovery has already got past.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from hadr_backup.postgres.spool import replace_text, source_args, take_lock

if TYPE_CHECKING:
    from hadr_backup.policy.model import Policy, PostgresSource
    from hadr_backup.postgres.archive import WalFetchResult


PREFETCH_DIR = ".hadr-prefetch"


def prefetch_dir(dest) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(dest)), PREFETCH_DIR)


def serve_prefetched(policy: Policy, source: PostgresSource, name: str, dest: str | os.PathLike,
                     count: int) -> WalFetchResult | None:
    """Move a prefetched ``name`` to ``dest``; None when it was not prefetched."""
    from hadr_backup.fsutil import fsync_dir
    from hadr_backup.postgres.archive import WalFetchResult

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
    start_prefetch(policy, source, name, dest, count)
    return WalFetchResult(source.name, name, str(dest), "prefetched", os.path.getsize(dest))


def _drop_older(directory: str, name: str) -> None:
    """Prefetched segments before ``name`` will not be asked for again (recovery moves forward)."""
    for entry in os.listdir(directory):
        stale_temp = entry.startswith(".") and entry.endswith(".tmp") and \
            time.time() - os.path.getmtime(os.path.join(directory, entry)) > 600
        if stale_temp or (len(entry) == 24 and entry[8:] < name[8:]):
            try:
                os.unlink(os.path.join(directory, entry))
            except FileNotFoundError:
                pass


def start_prefetch(policy: Policy, source: PostgresSource, name: str, dest: str | os.PathLike, count: int) -> None:
    """Start a background prefetcher when fewer than half of the next ``count`` segments are there."""
    directory = prefetch_dir(dest)
    os.makedirs(directory, exist_ok=True)
    ahead = [e for e in os.listdir(directory) if len(e) == 24 and e[:8] == name[:8] and e[8:] > name[8:]]
    if len(ahead) >= max(1, count // 2) or _is_locked(os.path.join(directory, ".lock")):
        return
    _spawn_prefetcher(policy, source, ["--dir", directory, "--after", name, "--count", str(count)])


def _spawn_prefetcher(policy: Policy, source: PostgresSource, args: list[str]) -> None:
    import subprocess

    subprocess.Popen([sys.executable, "-m", "hadr_backup.postgres.prefetch", *args, *source_args(policy, source)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


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
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from hadr_backup.postgres import wal
    from hadr_backup.postgres.archive import load_identity, write_verified
    from hadr_backup.repo.repository import open_repo

    lock = take_lock(os.path.join(directory, ".lock"))
    if lock is None:
        return 0
    try:
        with open_repo(policy, catalog=False) as repo:
            identity = load_identity(repo, source.name)
            size = identity.segment_size if identity else wal.DEFAULT_SEGMENT_SIZE
            names, name = [], after
            for _ in range(count):
                name = wal.next_segment(name, size)
                names.append(name)
            archived = wal.list_archived_for(repo, source.name, names)
            wanted = []
            for name in names:  # up to the first gap: recovery cannot read past it anyway
                found = archived.find(name)
                if found is None or name in archived.conflicts:
                    break
                if not os.path.exists(os.path.join(directory, name)):
                    wanted.append(found)

            def fetch(found) -> int:
                if _requested(directory, found.name):
                    return 0
                target = Path(directory) / found.name
                write_verified(repo.read_object(found.key), target, found.sha256, found.name)
                if _requested(directory, found.name):  # recovery got past it meanwhile
                    target.unlink(missing_ok=True)
                return 1

            with ThreadPoolExecutor(max(1, source.archive_workers)) as pool:
                return sum(pool.map(fetch, wanted))
    finally:
        os.close(lock)


def main(argv: list[str]) -> int:
    import argparse

    from hadr_backup.policy.load import load_policy

    parser = argparse.ArgumentParser(prog="hadr_backup.postgres.prefetch", description="the background prefetcher")
    parser.add_argument("--policy")
    parser.add_argument("--source", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args(argv)
    policy = load_policy(args.policy or os.environ.get("HADR_POLICY"))
    run_prefetcher(policy, policy.sources.postgres_named(args.source), args.dir, args.after, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
