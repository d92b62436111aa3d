"""``hadr restore pg`` never destroys what it must keep, proves before it writes, and cleans up after
itself: a real cluster archiving into a real (encrypted) repository, hadr run as the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from hadr_backup.repo.repository import open_repo
from tests.integration.pg_support import PgEnv, mount_tmpfs, restored_port, unmount

pytestmark = pytest.mark.integration
ASIDE = re.compile(r"\.hadr-old-\d{8}T\d{6}Z(-\d+)?$")


@pytest.fixture(scope="module")
def env():
    env = PgEnv(encrypted=True)
    env.sql("create table item(id int primary key, payload text)")
    env.sql("insert into item select g, md5(g::text) from generate_series(1, 2000) g")
    yield env
    env.close()


@pytest.fixture(scope="module")
def backups(env: PgEnv) -> tuple[str, str, str]:
    """(older, newer, a time after newer): rows 1-2000 before the older backup, up to 3000 before the newer
    one and before that time, 3500 archived."""
    older = env.backup().backup_id
    env.sql("insert into item select g, md5(g::text) from generate_series(2001, 3000) g")
    newer = env.backup().backup_id
    between = env.sql("select clock_timestamp()")[0][0].isoformat()
    env.sql("insert into item select g, md5(g::text) from generate_series(3001, 3500) g")
    env.switch_and_wait()
    return older, newer, between


# -- helpers ------------------------------------------------------------------------------------------


def hadr(policy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hadr_backup", "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


def tree(path: Path) -> dict[str, int]:
    """Every entry under ``path`` (symlinks not followed) with its size (-1 for a directory)."""
    found = {}
    for directory, names, files in os.walk(path):
        for name in names + files:
            entry = Path(directory) / name
            found[str(entry.relative_to(path))] = (
                -1 if entry.is_dir() and not entry.is_symlink() else entry.lstat().st_size
            )
    return found


def siblings_aside(to: Path) -> list[Path]:
    return sorted(p for p in to.parent.iterdir() if p.name.startswith(to.name) and ASIDE.search(p.name))


def object_key(env: PgEnv, backup_id: str) -> str:
    with open_repo(env.policy) as repo:
        return repo.catalog.get(backup_id).meta["tar_objects"][0]


@contextmanager
def changed(path: Path, change: Callable[[bytes], bytes | None]) -> Iterator[None]:
    """``path`` rewritten by ``change`` (None: removed) for the duration, then put back byte for byte."""
    original = path.read_bytes()
    replaced = change(original)
    if replaced is None:
        path.unlink()
    else:
        path.write_bytes(replaced)
    try:
        yield
    finally:
        path.write_bytes(original)


def flip_middle(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x55
    return bytes(damaged)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small filesystem (mounting fails the test, it never skips it)."""
    mount_tmpfs(path, size, [])
    try:
        yield path
    finally:
        unmount(path)


def with_old_contents(env: PgEnv) -> tuple[Path, dict[str, int]]:
    to = env.new_restore_dir()
    (to / "notes").mkdir(parents=True)
    (to / "notes" / "keep.txt").write_text("keep me")
    (to / "link").symlink_to(env.repo_dir)  # a link to the repository is moved, never followed
    return to, tree(to)


# -- 1. --to never hits what must be kept -------------------------------------------------------------


def test_force_refuses_a_folder_holding_the_repository_key_policy_and_cluster(env: PgEnv, backups) -> None:
    repository, key, cluster_pid = tree(env.repo_dir), env.key_file.read_bytes(), env.cluster.pid
    done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(env.base), "--force")
    assert done.returncode == 2, done.stderr
    assert f"--to {env.base} contains the repository {env.repo_dir}" in done.stderr
    assert f"contains the key file {env.key_file}" in done.stderr
    assert f"contains the policy file {env.policy_path}" in done.stderr
    assert tree(env.repo_dir) == repository and env.key_file.read_bytes() == key
    assert env.cluster.pid == cluster_pid and env.sql("select count(*) from item")[0][0] >= 2000
    assert siblings_aside(env.base) == []


@pytest.mark.parametrize(
    "where, says",
    [("", "is the repository"), ("backups", "is inside the repository"), ("backups/new", "is inside the repository")],
)
def test_the_repository_itself_or_inside_it_is_refused(env: PgEnv, backups, where: str, says: str) -> None:
    before = tree(env.repo_dir)
    to = env.repo_dir / where if where else env.repo_dir
    done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), "--force")
    assert done.returncode == 2, done.stderr
    assert f"--to {to} {says} {env.repo_dir}" in done.stderr
    assert tree(env.repo_dir) == before and not (env.repo_dir / "backups" / "new").exists()


def test_a_running_cluster_below_or_above_is_refused(env: PgEnv, backups) -> None:
    data, pid = env.cluster.data_dir, env.cluster.pid
    inside = f"is inside {data},"
    for to, force, how in (
        (data.parent, ["--force"], f"contains {data},"),
        (data, ["--force"], "is"),
        (data / "base", ["--force"], inside),
        (data / "restore-here", [], inside),
    ):
        done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), *force)
        assert done.returncode == 2, done.stderr
        assert (
            f"--to {to} {how} the data directory of a running PostgreSQL server (postmaster.pid {pid})" in done.stderr
        )
    assert not (data / "restore-here").exists() and siblings_aside(data.parent) == []
    assert (data / "PG_VERSION").exists() and (data / "base").is_dir() and env.cluster.pid == pid
    assert env.sql("select count(*) from item")[0][0] >= 2000


def test_a_stale_postmaster_pid_deep_down_is_refused_and_links_are_not_followed(env: PgEnv, backups) -> None:
    to, _ = with_old_contents(env)
    (to / "notes" / "old-cluster").mkdir()
    (to / "notes" / "old-cluster" / "postmaster.pid").write_text("999999999\n")
    before = tree(to)
    done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), "--force", "--discard")
    assert done.returncode == 2, done.stderr
    assert (
        f"--to {to} contains {to}/notes/old-cluster, the data directory of a PostgreSQL server that is "
        f"running or was not shut down cleanly" in done.stderr
    )
    assert tree(to) == before
    # a link to the live cluster is not followed: it is deleted as a link, the cluster is untouched
    shutil.rmtree(to / "notes")
    (to / "cluster").symlink_to(env.cluster.data_dir)
    done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), "--force", "--discard")
    assert done.returncode == 0, done.stderr
    assert not (to / "cluster").is_symlink() and (env.cluster.data_dir / "postmaster.pid").exists()
    assert env.sql("select count(*) from item")[0][0] >= 2000


@pytest.mark.parametrize(
    "kept, what",
    [
        ("key_file", "the key file"),
        ("policy", "the policy file"),
        ("data_dir", "the data directory of PostgreSQL source main"),
        ("spool_dir", "the WAL spool of PostgreSQL source main"),
        ("aof_dir", "the AOF directory of Redis source cache"),
    ],
)
def test_keys_policies_and_sources_data_are_refused(env: PgEnv, backups, kept: str, what: str) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="kept-", dir=env.base))
    thing = scratch / "kept" / ("hadr.key" if kept == "key_file" else "policy.yaml" if kept == "policy" else kept)
    thing.parent.mkdir()
    if kept in ("key_file", "policy"):
        shutil.copy(env.key_file if kept == "key_file" else env.policy_path, thing)
    else:
        thing.mkdir()
        (thing / "precious").write_text("keep me")
    data = yaml.safe_load(env.policy_path.read_text())
    if kept == "key_file":
        data["encryption"]["key_file"] = str(thing)
    elif kept in ("data_dir", "spool_dir"):
        data["sources"]["postgres"][0][kept] = str(thing)
    elif kept == "aof_dir":
        data["sources"]["redis"] = [{"name": "cache", "url": "redis://127.0.0.1:6399/0", "aof_dir": str(thing)}]
    policy = thing if kept == "policy" else env.base / f"policy-{kept}.yaml"
    policy.write_text(yaml.safe_dump(data))
    before = tree(scratch)
    targets = [(scratch, "contains"), (thing.parent, "contains")]
    targets += [] if thing.is_file() else [(thing, "is"), (thing / "sub", "is inside")]
    for to, how in targets:
        done = hadr(policy, "restore", "pg", "--backup", backups[0], "--to", str(to), "--force")
        assert done.returncode == 2, done.stderr
        assert f"--to {to} {how} {what} {thing}" in done.stderr
    assert tree(scratch) == before and siblings_aside(scratch) == []


def test_root_and_discard_without_force_are_usage_errors(env: PgEnv, backups) -> None:
    done = env.hadr("restore", "pg", "--backup", backups[0], "--to", "/")
    assert done.returncode == 2 and "--to / is the root directory" in done.stderr
    to, before = with_old_contents(env)
    done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), "--discard")
    assert done.returncode == 2 and "--discard only goes with --force" in done.stderr
    assert tree(to) == before


def test_force_moves_the_old_contents_aside_and_says_where(env: PgEnv, backups) -> None:
    to, before = with_old_contents(env)
    repository = tree(env.repo_dir)
    done = env.hadr("--json", "restore", "pg", "--backup", backups[0], "--to", str(to), "--force")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    [aside] = siblings_aside(to)
    assert result["previous_contents"] == "moved aside" and result["previous_path"] == str(aside)
    assert tree(aside) == before and (aside / "notes" / "keep.txt").read_text() == "keep me"
    assert (to / "PG_VERSION").exists() and not (to / "notes").exists()
    assert tree(env.repo_dir) == repository  # the link into the repository was moved, not followed
    # again: the restored cluster (not running) is moved aside in turn, and the human output says where
    done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), "--force")
    assert done.returncode == 0, done.stderr
    second = [p for p in siblings_aside(to) if p != aside]
    assert len(second) == 1 and (second[0] / "PG_VERSION").exists() and tree(aside) == before
    assert re.search(rf"previous contents\s+moved aside to {re.escape(str(second[0]))}", done.stdout), done.stdout


def test_force_discard_deletes_the_old_contents(env: PgEnv, backups) -> None:
    to, _ = with_old_contents(env)
    repository = tree(env.repo_dir)
    done = env.hadr("--json", "restore", "pg", "--backup", backups[0], "--to", str(to), "--force", "--discard")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["previous_contents"] == "deleted"
    assert not (to / "notes").exists() and not (to / "link").exists() and (to / "PG_VERSION").exists()
    assert siblings_aside(to) == [] and tree(env.repo_dir) == repository


def test_nothing_is_moved_aside_when_the_plan_fails(env: PgEnv, backups) -> None:
    to, before = with_old_contents(env)
    done = env.hadr("restore", "pg", "--target-time", "2001-01-01 00:00:00", "--to", str(to), "--force")
    assert done.returncode == 2 and "restorable window" in done.stderr
    assert tree(to) == before and siblings_aside(to) == []


def test_a_mount_point_cannot_be_moved_aside(env: PgEnv, backups) -> None:
    with tmpfs(env.base / "mounted", "256m") as to:
        (to / "data.txt").write_text("on the mount")
        done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), "--force")
        assert done.returncode == 2, done.stderr
        assert f"--force cannot move what {to} holds aside" in done.stderr and "mount point" in done.stderr
        assert "--discard" in done.stderr and (to / "data.txt").read_text() == "on the mount"
        done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to), "--force", "--discard")
        assert done.returncode == 0, done.stderr
        assert not (to / "data.txt").exists() and (to / "PG_VERSION").exists()


# -- 2. the plan proves the backup is whole before anything is written ---------------------------------


@pytest.mark.parametrize("missing", [True, False], ids=["missing", "short"])
def test_an_explicit_backup_that_is_not_whole_is_refused_before_writing(env: PgEnv, backups, missing: bool) -> None:
    key = object_key(env, backups[1])
    size = (env.repo_dir / key).stat().st_size
    says = "is missing" if missing else f"is {size - 100} bytes, the catalog says {size}"
    fresh = env.new_restore_dir()
    old, before = with_old_contents(env)
    with changed(env.repo_dir / key, lambda data: None if missing else data[:-100]):
        done = env.hadr("restore", "pg", "--backup", backups[1], "--to", str(fresh))
        assert done.returncode == 1, done.stderr
        assert f"backup {backups[1]} cannot be restored: {key} {says}" in done.stderr
        done = env.hadr("restore", "pg", "--backup", backups[1], "--to", str(old), "--force")
        assert done.returncode == 1 and key in done.stderr
    assert not fresh.exists()
    assert tree(old) == before and siblings_aside(old) == []


@pytest.mark.parametrize("target", ["--latest", "--target-time"])
def test_a_backup_that_is_not_whole_is_passed_over_for_an_older_one(env: PgEnv, backups, target: str) -> None:
    older, newer, between = backups
    key = object_key(env, newer)
    to = env.new_restore_dir()
    with changed(env.repo_dir / key, lambda data: None):
        done = env.hadr(
            "--json",
            "restore",
            "pg",
            *([target] if target == "--latest" else [target, between]),
            "--to",
            str(to),
            "--start",
        )
    try:
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["backup"] == older
        assert result["notes"] == [f"backup {newer} is not whole ({key} is missing); using {older}"]
        rows = 3500 if target == "--latest" else 3000
        assert env.sql("select count(*), max(id) from item", port=restored_port(to)) == [(rows, rows)]
    finally:
        env.stop_restored(to)
    # whole again: the newer backup is the one chosen, without a note
    done = env.hadr("--json", "restore", "pg", "--latest", "--to", str(to), "--force", "--discard")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backup"] == newer and json.loads(done.stdout)["notes"] == []


def test_no_whole_backup_at_all_is_a_failure_naming_each(env: PgEnv, backups) -> None:
    keys = [object_key(env, backup_id) for backup_id in backups[:2]]
    to = env.new_restore_dir()
    with changed(env.repo_dir / keys[0], lambda data: None), changed(env.repo_dir / keys[1], lambda data: data[:10]):
        done = env.hadr("restore", "pg", "--latest", "--to", str(to))
    assert done.returncode == 1, done.stderr
    assert "no whole backup can serve" in done.stderr
    assert f"{keys[0]} is missing" in done.stderr and f"{keys[1]} is 10 bytes" in done.stderr
    assert not to.exists()


# -- 3. a failure while writing names the object and leaves nothing behind ------------------------------


@pytest.mark.parametrize("before", ["absent", "empty", "moved aside"])
def test_corruption_mid_stream_names_the_object_and_puts_the_directory_back(env: PgEnv, backups, before: str) -> None:
    older, newer, _ = backups
    key = object_key(env, newer)
    if before == "moved aside":
        to, old = with_old_contents(env)
    else:
        to, old = env.new_restore_dir(), {}
        if before == "empty":
            to.mkdir()
    force = ["--force"] if before == "moved aside" else []
    with changed(env.repo_dir / key, flip_middle):
        done = env.hadr("restore", "pg", "--backup", newer, "--to", str(to), *force)
    assert done.returncode == 1, done.stderr
    assert re.search(rf"restoring backup {newer}: {re.escape(key)}: .*chunk \d+", done.stderr), done.stderr
    if before == "absent":
        assert not to.exists() and f"{to} was removed" in done.stderr
    else:
        assert tree(to) == old
    assert siblings_aside(to) == []
    # the next attempt needs no --force (with the old contents back, --force is needed again, as before)
    done = env.hadr("restore", "pg", "--backup", older if before == "empty" else newer, "--to", str(to), *force)
    assert done.returncode == 0, done.stderr
    assert (to / "PG_VERSION").exists()


def test_files_were_written_before_the_corruption_was_found(env: PgEnv, backups, monkeypatch) -> None:
    """The flip in the middle is caught mid-stream: the put-back had extracted files to remove."""
    from hadr_backup.errors import IntegrityError
    from hadr_backup.postgres.restoredir import Workspace

    newer = backups[1]
    key = object_key(env, newer)
    seen: list[int] = []
    put_back = Workspace.put_back

    def counting(self):
        seen.append(sum(1 for entry in tree(self.path).values() if entry >= 0))
        return put_back(self)

    monkeypatch.setattr(Workspace, "put_back", counting)
    to = env.new_restore_dir()
    with changed(env.repo_dir / key, flip_middle), pytest.raises(IntegrityError) as failed:
        env.restore(to, backup_id=newer)
    assert seen and seen[0] > 100, seen  # hundreds of files of the data directory were already there
    assert str(failed.value).startswith(f"restoring backup {newer}: {key}: ")
    assert f"{to} was removed" in str(failed.value) and not to.exists()


def test_a_full_disk_names_the_object_and_empties_the_directory(env: PgEnv, backups) -> None:
    key = object_key(env, backups[0])
    with tmpfs(env.base / "small", "6m") as to:  # the data directory alone is over 20 MiB
        done = env.hadr("restore", "pg", "--backup", backups[0], "--to", str(to))
        assert done.returncode == 1, done.stderr
        # the object being read, and the file the disk refused
        assert re.search(
            rf"restoring backup {backups[0]}: {re.escape(key)}: {re.escape(str(to))}/\S+: "
            r"No space left on device",
            done.stderr,
        ), done.stderr
        assert "free space on that filesystem" in done.stderr and f"{to} was emptied again" in done.stderr
        assert list(to.iterdir()) == []
