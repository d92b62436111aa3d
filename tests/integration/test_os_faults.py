"""OS faults read as one line naming the path and the cause, with exit 1, never as a traceback (``-v``
shows the traceback, the OSError chained): wal-push as PostgreSQL's archive_command into a folder the
postgres OS user may not write, backup pg into a full repository, restore pg into a full disk.

"Full" is a real tmpfs of a few MiB (these tests run as root, as the rest of the suite does; a mount
that fails fails the test).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from hadr_backup.cli import main as cli_main
from hadr_backup.errors import RepositoryWriteFailed
from hadr_backup.repo.local import LocalStorage
from hadr_backup.repo.storage import read_all
from tests.integration.pg_support import PgEnv, mount_tmpfs, unmount

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_SPACE = "No space left on device"


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one ``hadr: error:`` line of a failed run (its hint may follow), after checking the basics."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("hadr: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def hint_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.splitlines()
    return lines[lines.index(error_line(done)) + 1]


@pytest.fixture
def tmpfs() -> Iterator[Callable[[str], Path]]:
    """``tmpfs("1m")`` -> the path of a fresh tmpfs of that size; all are unmounted at teardown."""
    mounts: list[Path] = []
    base = Path(os.path.realpath("/tmp")) / f"hadr-full-{os.getpid()}-{time.monotonic_ns()}"

    def mount(size: str) -> Path:
        return mount_tmpfs(base / str(len(mounts)), size, mounts)

    yield mount
    for path in reversed(mounts):
        unmount(path)
    shutil.rmtree(base, ignore_errors=True)


# -- the local driver ------------------------------------------------------------------------------


def test_put_into_a_full_filesystem_names_the_path_and_leaves_the_old_object(tmpfs) -> None:
    root = tmpfs("1m")
    store = LocalStorage(root)
    store.put("wal/main/object", [b"old"])
    with pytest.raises(RepositoryWriteFailed) as caught:
        store.put("wal/main/object", (os.urandom(256 << 10) for _ in range(8)))
    assert caught.value.message == f"cannot write {root}/wal/main/object: {NO_SPACE}"
    assert f"the filesystem holding {root} is full" in caught.value.hint
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC
    assert read_all(store, "wal/main/object") == b"old"
    assert os.listdir(root / "wal" / "main") == ["object"]  # the temporary file is gone


def test_an_error_of_the_data_source_is_not_blamed_on_the_repository(tmp_path: Path) -> None:
    def failing_source():
        yield b"first block"
        raise OSError(errno.EIO, "Input/output error", "/dev/broken")

    with pytest.raises(OSError) as caught:
        LocalStorage(tmp_path).put("a/object", failing_source())
    assert not isinstance(caught.value, RepositoryWriteFailed) and caught.value.filename == "/dev/broken"
    assert os.listdir(tmp_path / "a") == []


# -- the CLI's last resort -------------------------------------------------------------------------


@click.command("raise-os-error")
def raise_os_error() -> None:
    try:
        raise OSError(errno.EIO, "Input/output error")
    except OSError as low:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/hadr/x") from low


def test_any_other_os_error_is_one_line_and_a_traceback_only_with_v(monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli_main.COMMANDS, "raise-os-error", (f"{__name__}:raise_os_error", "test"))
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["raise-os-error"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == "hadr: error: /srv/hadr/x: Permission denied\n"
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["-v", "raise-os-error"])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err.endswith("hadr: error: /srv/hadr/x: Permission denied\n")
    assert "Traceback" in err and "OSError: [Errno 5] Input/output error" in err
    assert "PermissionError: [Errno 13] Permission denied: '/srv/hadr/x'" in err


# -- wal-push (archive_command) and restore pg -----------------------------------------------------


@pytest.fixture(scope="module")
def env() -> Iterator[PgEnv]:
    env = PgEnv()
    env.sql("create table item(id int primary key, payload text)")
    yield env
    env.close()


def hadr_as_postgres(env: PgEnv, *args: str) -> subprocess.CompletedProcess:
    """hadr as archive_command runs it: as the postgres OS user (root would ignore permissions)."""
    argv = [
        "runuser",
        "-u",
        "postgres",
        "--",
        sys.executable,
        "-m",
        "hadr_backup",
        "--policy",
        str(env.policy_path),
        *args,
    ]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        cwd=env.base,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def current_segment_copy(env: PgEnv) -> Path:
    """A copy of the segment the server is writing (so not archived yet), readable by postgres."""
    env.sql("insert into item select coalesce(max(id), 0) + 1, 'written' from item")  # the segment exists
    name = env.sql("select pg_walfile_name(pg_current_wal_insert_lsn())")[0][0]
    copy = env.base / "pushed" / name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(env.cluster.data_dir / "pg_wal" / name, copy)
    shutil.chown(copy.parent, "postgres", "postgres")
    shutil.chown(copy, "postgres", "postgres")
    return copy


def archiver_failures(env: PgEnv) -> int:
    return env.sql("select failed_count from pg_stat_archiver")[0][0]


def hand_folders(path: Path, user: str, mode: str) -> None:
    """Give the folders under ``path`` (not the files) to ``user`` with ``mode``."""
    subprocess.run(
        [
            "find",
            str(path),
            "-type",
            "d",
            "-exec",
            "chown",
            f"{user}:{user}",
            "{}",
            "+",
            "-exec",
            "chmod",
            mode,
            "{}",
            "+",
        ],
        check=True,
    )


def test_wal_push_into_a_folder_postgres_may_not_write(env: PgEnv) -> None:
    env.switch_and_wait()  # wal/main and its archive.json exist, written by the archiver
    wal_dir = env.repo_dir / "wal" / "main"
    segment = current_segment_copy(env)
    failures = archiver_failures(env)
    hand_folders(wal_dir, "root", "0755")  # postgres may read, not write
    try:
        done = hadr_as_postgres(env, "wal-push", "--source", "main", str(segment))
        line = error_line(done)
        assert line.startswith(f"hadr: error: cannot write {wal_dir}/") and line.endswith(": Permission denied")
        assert segment.name in line
        assert "the OS user postgres may not write in" in hint_line(done)
        assert f"chown -R postgres: {env.repo_dir}" in hint_line(done)
        # PostgreSQL runs the same command: the same line lands in its log, and no traceback
        env.sql("insert into item select max(id) + 1, 'not archived yet' from item")
        env.sql("select pg_switch_wal()")
        deadline = time.monotonic() + 60
        while archiver_failures(env) == failures and time.monotonic() < deadline:
            time.sleep(0.2)
        assert archiver_failures(env) > failures
        log = env.cluster.log_path.read_text(errors="replace")
        assert f"hadr: error: cannot write {wal_dir}/" in log and "Permission denied" in log
        assert "Traceback" not in log
    finally:
        hand_folders(wal_dir, "postgres", "0700")
    env.sql("insert into item select max(id) + 1, 'after the fix' from item")
    env.switch_and_wait()  # once the owner is right again, the archiver catches up


@pytest.fixture(scope="module")
def backed_up(env: PgEnv):
    return env.backup()


def test_restore_into_a_full_filesystem(env: PgEnv, backed_up, tmpfs) -> None:
    target = tmpfs("4m") / "restored"
    done = env.hadr("restore", "pg", "--latest", "--to", str(target))
    line = error_line(done)
    assert line.startswith("hadr: error: restoring backup ") and f": {target}/" in line and line.endswith(NO_SPACE)
    assert "free space on that filesystem" in hint_line(done) and f"{target} was removed" in hint_line(done)


# -- backup pg into a full repository -------------------------------------------------------------


@pytest.fixture(scope="module")
def full_env() -> Iterator[PgEnv]:
    """A cluster whose repository is a tmpfs of 8 MiB, and whose base backup is larger: random bytes
    in the data directory (incompressible, and no WAL, so the archive itself still fits)."""
    env = PgEnv(repo_size="8m")
    ballast = env.cluster.data_dir / "hadr_test_ballast"
    ballast.write_bytes(os.urandom(24 << 20))
    shutil.chown(ballast, "postgres", "postgres")
    yield env
    env.close()


def test_backup_into_a_full_repository_fails_in_one_line_and_is_marked_failed(full_env: PgEnv) -> None:
    done = full_env.hadr("backup", "pg")
    backups = full_env.repo_dir / "backups" / "pg" / "main"
    line = error_line(done)
    assert line.startswith(f"hadr: error: cannot write {backups}/")
    assert line.endswith(f"/base.tar: {NO_SPACE}")
    assert f"the filesystem holding {full_env.repo_dir} is full" in hint_line(done)
    listed = json.loads(full_env.hadr("--json", "list", check=True).stdout)["backups"]
    assert [(b["state"], b["error"]) for b in listed] == [("failed", line.removeprefix("hadr: error: "))]
    assert [p for p in backups.rglob("*") if p.is_file()] == []  # nothing of it is left, not even a temp file


def test_backup_into_a_full_repository_with_v_shows_the_chained_os_error(full_env: PgEnv) -> None:
    done = full_env.hadr("-v", "backup", "pg")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert f"OSError: [Errno {errno.ENOSPC}] {NO_SPACE}" in done.stderr
    assert "The above exception was the direct cause of the following exception" in done.stderr
    assert "hadr_backup.errors.RepositoryWriteFailed: cannot write" in done.stderr
    assert done.stderr.splitlines()[-2].startswith("hadr: error: cannot write ")
