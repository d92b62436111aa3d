"""A PostgreSQL cluster archiving into a hadr repository, for the backup, restore and PITR tests.

Module-scoped fixtures build one ``PgEnv`` (cluster + repository + policy file) and reuse it across the
tests of a module; every restored server is stopped and every directory removed at teardown.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from hadr_backup.policy.load import load_policy
from hadr_backup.postgres import wal
from hadr_backup.postgres.archive import archive_command_for
from hadr_backup.postgres.server import open_connection
from hadr_backup.procs import free_port, prepare_dir_for_postgres, run_as_owner
from hadr_backup.repo.repository import init_repo, open_repo
from hadr_backup.sandbox.servers import PostgresCluster

BIN = "/usr/lib/postgresql/15/bin"


def new_key_file(path: Path) -> Path:
    path.write_text("hadr-key-v1:" + base64.b64encode(os.urandom(32)).decode() + "\n")
    os.chmod(path, 0o600)
    shutil.chown(path, "postgres", "postgres")
    return path


class PgEnv:
    """A cluster whose archive_command is ``hadr wal-push`` into a repository of its own."""

    def __init__(
        self,
        *,
        encrypted: bool = False,
        settings: dict[str, Any] | None = None,
        backup_timeout: float = 60,
        s3: tuple[str, str] | None = None,
        cluster_options: dict[str, Any] | None = None,
        repo_size: str | None = None,
    ):
        """``cluster_options``: more PostgresCluster arguments (``encoding``, ``locale``); ``repo_size``:
        the repository is a tmpfs of that size (e.g. "8m"), so that it can run full."""
        self.base = prepare_dir_for_postgres(tempfile.mkdtemp(prefix="hadr-pgt-", dir="/tmp"))
        self.repo_dir = prepare_dir_for_postgres(self.base / "repo")
        self.mounts: list[Path] = []
        if repo_size:
            self.repo_dir = prepare_dir_for_postgres(mount_tmpfs(self.repo_dir, repo_size, self.mounts))
        self.s3 = s3  # (endpoint, bucket): the repository is s3://bucket/pg there instead of repo_dir
        self.key_file = new_key_file(self.base / "hadr.key") if encrypted else None
        self.policy_path = self.base / "policy.yaml"
        self.port = free_port()
        self.write_policy(backup_timeout=backup_timeout)
        init_repo(self.policy)
        self.cluster = PostgresCluster(
            self.base / "pg",
            self.port,
            settings={
                "archive_mode": "on",
                "archive_command": archive_command_for(self.policy_path, "main"),
                "track_commit_timestamp": "on",
                "max_wal_size": "1GB",
                **(settings or {}),
            },
            **(cluster_options or {}),
        )
        self.cluster.init()
        self.cluster.start()
        self.restored: list[Path] = []

    def write_policy(self, **source: Any) -> None:
        repository: dict[str, Any] = {"path": str(self.repo_dir)}
        if self.s3:
            repository = {
                "url": f"s3://{self.s3[1]}/pg",
                "endpoint": self.s3[0],
                "access_key": "testing",
                "secret_key": "testing",
                "lock_dir": str(self.base),
            }
        data: dict[str, Any] = {
            "repository": repository,
            "sources": {"postgres": [{"name": "main", "dsn": self.dsn(), **source}]},
        }
        if self.key_file:
            data["encryption"] = {"key_file": str(self.key_file)}
        self.policy_path.write_text(yaml.safe_dump(data))
        shutil.chown(self.policy_path, "postgres", "postgres")

    def dsn(self, dbname: str = "postgres", port: int | None = None) -> str:
        return f"host=127.0.0.1 port={port or self.port} user=postgres dbname={dbname}"

    @property
    def policy(self):
        return load_policy(str(self.policy_path))

    # -- the cluster -------------------------------------------------------------------------------

    def sql(self, text: str, params: tuple | None = None, port: int | None = None) -> list[tuple]:
        """Rows as hadr reads them (text as ``str`` whatever the cluster's encoding)."""
        with open_connection(self.dsn(port=port)) as conn:
            cursor = conn.execute(text, params)
            return cursor.fetchall() if cursor.description else []

    def switch_and_wait(self, timeout: float = 60) -> str:
        """Close the current segment and wait until it is in the repository; return its name."""
        name = self.sql("select pg_walfile_name(pg_current_wal_insert_lsn())")[0][0]
        self.sql("select pg_switch_wal()")
        self.wait_archived(name, timeout)
        return name

    def wait_archived(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open_repo(self.policy, catalog=False) as repo:
                if wal.list_archived(repo, "main").find(name) is not None:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{name} was not archived within {timeout} s")

    # -- hadr --------------------------------------------------------------------------------------

    def hadr(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "hadr_backup", "--policy", str(self.policy_path), *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"hadr {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def backup(self):
        from hadr_backup.postgres.basebackup import run_backup_pg

        return run_backup_pg(self.policy, "main")

    def restore(self, to: Path | None = None, **options: Any):
        from hadr_backup.postgres.restore import RestoreOptions, run_restore_pg
        from hadr_backup.postgres.targets import make_target

        to = to or self.new_restore_dir()
        keys = ("time", "lsn", "xid", "name", "latest", "exclusive")
        target = make_target(backup_id=options.get("backup_id"), **{k: options.pop(k) for k in keys if k in options})
        if to not in self.restored:
            self.restored.append(to)
        return run_restore_pg(self.policy, RestoreOptions(to=to, target=target, **options))

    def new_restore_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="r-", dir=self.base))
        shutil.rmtree(path)
        self.restored.append(path)
        return path

    def stop_restored(self, path: Path) -> None:
        if (path / "postmaster.pid").exists():
            run_as_owner([f"{BIN}/pg_ctl", "-D", str(path), "-m", "immediate", "-w", "stop"], check=False)

    def close(self) -> None:
        for path in self.restored:
            self.stop_restored(path)
        self.cluster.stop("immediate")
        for mount in reversed(self.mounts):
            unmount(mount)
        shutil.rmtree(self.base, ignore_errors=True)


def mount_tmpfs(path: Path, size: str, mounts: list[Path]) -> Path:
    """Mount a tmpfs of ``size`` on ``path`` (root only; a failure fails the test, it never skips it)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    mounts.append(path)
    return path


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # still busy: detach it


def restored_port(path: Path) -> int:
    for line in reversed((path / "postgresql.auto.conf").read_text().splitlines()):
        if line.startswith("port = "):
            return int(line.split("'")[1])
    raise AssertionError(f"no port in {path}/postgresql.auto.conf")
