"""A repository like the sandbox's after a day of backups, written with injected times: hourly PostgreSQL
base backups (each with its objects and description) and the WAL between them, as `hadr backup pg` and
`wal-push` store them. Retention and prune read nothing else, so the day takes a second to make."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hadr_backup.postgres import wal
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import COMPLETE, BackupEntry, new_backup_id
from hadr_backup.repo.repository import open_repo
from tests.helpers import hadr_cli, local_policy_data, seed_wal, wal_policy_data, write_policy

SEGMENT = 16 << 20
HOUR = 3600.0


def day_policy(tmp_path: Path, repository: dict | None = None, **retention) -> Path:
    """A policy for PostgreSQL source ``main`` and ``retention``, its repository (default: ``tmp_path/repo``)
    initialised."""
    repository = repository or local_policy_data(tmp_path / "repo")["repository"]
    data = {**wal_policy_data(repository), "retention": retention}
    path = write_policy(tmp_path / "policy.yaml", data)
    hadr_cli(path, "init", check=True)
    return path


def segment(number: int) -> str:
    return wal.segment_name_from_number(1, number, SEGMENT)


def pg_entry(policy, when: float, number: int) -> BackupEntry:
    """A complete base backup taken at ``when`` whose WAL is segment ``number`` alone."""
    backup_id = new_backup_id("pg", when)
    entry = BackupEntry(id=backup_id, kind="pg", source="main", state=COMPLETE, started_at=when - 60)
    entry.prefix = layout.backup_prefix("pg", "main", backup_id)
    start, stop = number * SEGMENT + 0x28, number * SEGMENT + 0x1000
    entry.meta = {
        "tar_objects": [entry.prefix + "base.tar"],
        "manifest_object": entry.prefix + "backup_manifest",
        "timeline": 1,
        "start_lsn": wal.format_lsn(start),
        "stop_lsn": wal.format_lsn(stop),
        "start_wal": segment(number),
        "stop_wal": segment(number),
        "start_time": when - 60,
        "stop_time": when,
        "system_identifier": "7000000000000000001",
        "pg_version_num": 150000,
        "wal_segment_size": SEGMENT,
    }
    entry.stopped_at = entry.consistent_at = when
    return entry


def write_day(policy_file: Path, first: float, hours: int) -> list[BackupEntry]:
    """``hours`` hourly backups from ``first`` on, and WAL segments 1 .. hours + 1 (the newest after the
    last backup): what a day of `hadr backup pg` under a running archive leaves."""
    from hadr_backup.policy.load import load_policy

    policy = load_policy(str(policy_file))
    seed_wal(policy, {segment(n): f"wal {n}".encode() * 100 for n in range(1, hours + 2)})
    entries = [pg_entry(policy, first + i * HOUR, i + 1) for i in range(hours)]
    with open_repo(policy, write=True) as repo:
        for entry in entries:
            entry.objects = [
                repo.put_object(entry.prefix + "base.tar", [f"tar of {entry.id}".encode() * 500]),
                repo.put_object(entry.prefix + "backup_manifest", [b"{}"]),
            ]
            entry.stored_size = sum(o.stored_size for o in entry.objects)
            entry.needs = [wal.wal_object_key("main", segment(int(entry.meta["start_wal"][16:], 16)), _sha(entry))]
            repo.put_json(layout.backup_description("pg", "main", entry.id), entry.to_json())
        repo.update_catalog(lambda catalog: [catalog.add(e) for e in entries])
    return entries


def _sha(entry: BackupEntry) -> str:
    number = int(entry.meta["start_wal"][16:], 16)
    return hashlib.sha256(f"wal {number}".encode() * 100).hexdigest()


def repository_files(repo_dir: Path) -> dict[str, bytes]:
    """Every file of a local repository and its content (the lock file aside)."""
    return {
        str(p.relative_to(repo_dir)): p.read_bytes()
        for p in sorted(repo_dir.rglob("*"))
        if p.is_file() and p.name != layout.LOCAL_LOCK_FILE
    }
