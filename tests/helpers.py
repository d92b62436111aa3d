"""Small helpers shared by tests: policies for a repository in a temp dir."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from hadr_backup.cli.main import COMMANDS, cli
from hadr_backup.policy.load import parse_policy


def local_policy_data(repo_dir: Path, key_file: Path | None = None, **extra) -> dict:
    data = {"repository": {"path": str(repo_dir)}, **extra}
    if key_file is not None:
        data["encryption"] = {"key_file": str(key_file)}
    return data


def local_policy(repo_dir: Path, key_file: Path | None = None, **extra):
    return parse_policy(local_policy_data(repo_dir, key_file, **extra), "test-policy")


def write_policy(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# -- the command line ---------------------------------------------------------------------------------


def leaf_commands() -> list[tuple[str, ...]]:
    """Every command that runs (not a group), as the words that name it: ("verify", "repo"), ("init",)."""
    found: list[tuple[str, ...]] = []

    def walk(words: tuple[str, ...], command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk((*words, name), sub)
        else:
            found.append(words)

    ctx = click.Context(cli)
    for name in COMMANDS:
        walk((name,), cli.get_command(ctx, name))
    return found


# -- WAL archives without a PostgreSQL server ---------------------------------------------------------


def wal_policy_data(repository: dict, **source) -> dict:
    """A policy for a repository and PostgreSQL source ``main`` (its DSN is never used by wal-push/fetch)."""
    entry = {"name": "main", "dsn": "host=127.0.0.1 port=1 user=postgres", **source}
    return {"repository": repository, "sources": {"postgres": [entry]}}


def hadr_cli(policy_file: Path, *args: str, as_postgres: bool = False, timeout: float = 300, check: bool = False):
    """``hadr --policy FILE ARGS…`` in a subprocess (as the postgres OS user, as PostgreSQL runs it);
    ``check``: a non-zero exit fails the test with hadr's output."""
    import subprocess
    import sys

    from hadr_backup.procs import as_owner

    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file), *args]
    done = subprocess.run(
        as_owner(argv) if as_postgres else argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"hadr {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def seed_wal(policy, files: dict[str, bytes], source: str = "main") -> dict[str, str]:
    """Store ``files`` (name -> content) as wal-push does, with an archive identity; name -> object key."""
    import hashlib

    from hadr_backup.postgres import wal
    from hadr_backup.postgres.archive import ArchiveIdentity, bind_identity
    from hadr_backup.repo.repository import open_repo

    keys = {}
    with open_repo(policy, write=True, lock=False, catalog=False) as repo:
        bind_identity(repo, source, ArchiveIdentity(7000000000000000001, 16 << 20, 0xD110, 15, 8192), "seed")
        for name, data in files.items():
            keys[name] = wal.wal_object_key(source, name, hashlib.sha256(data).hexdigest())
            repo.put_object(keys[name], [data], if_absent=True)
    return keys


# -- a terminal ---------------------------------------------------------------------------------------


def run_in_pty(argv: list[str], *, columns: int = 80, env: dict | None = None, timeout: float = 300):
    """Run ``argv`` with stdin, stdout and stderr on a pseudo-terminal ``columns`` wide (COLUMNS set too);
    (exit code, everything it wrote, ANSI escapes removed, line ends as \\n)."""
    import fcntl
    import os
    import pty
    import re
    import select
    import struct
    import subprocess
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
        env={**os.environ, **(env or {}), "COLUMNS": str(columns), "TERM": "xterm"},
    )
    os.close(slave)
    output, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))
    return code, text.replace("\r\n", "\n")
