"""hadr check against a real cluster archiving through hadr: a healthy one passes every check and exits 0;
each way of breaking the archive path exits 3 with the line that names it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from hadr_backup.engines import EngineContext, engine
from hadr_backup.postgres.archive import archive_command_for, hadr_command
from hadr_backup.postgres.walack import pusher_running
from hadr_backup.procs import free_port, prepare_dir_for_postgres, wait_until
from hadr_backup.repo import layout
from hadr_backup.repo.repository import open_repo
from tests.integration.pg_support import PgEnv, new_key_file

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
EVERY_CHECK = [
    "repository-reachable",
    "repository-identity",
    "repository-key",
    "repository-writable",
    "server-reachable",
    "role",
    "wal-level",
    "archive-mode",
    "archive-command",
    "archive-timeout",
    "clock-skew",
    "archive-identity",
    "archive-end-to-end",
]


@pytest.fixture(scope="module")
def env() -> Iterator[PgEnv]:
    env = PgEnv(encrypted=True, settings={"archive_timeout": "60"})
    caught_up(env)  # the archive is bound to this cluster
    yield env
    env.close()


def run_check(
    env: PgEnv, *args: str, policy: Path | None = None, as_postgres: bool = False
) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy or env.policy_path), "check", *args]
    if as_postgres:  # root would ignore permissions
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        cwd=env.base,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def line(done: subprocess.CompletedProcess, code: str) -> str:
    """The one output line of check ``code``."""
    found = [text for text in done.stdout.splitlines() if text.split(" ", 1)[0] == code]
    assert len(found) == 1, f"no single {code} line in:\n{done.stdout}\n{done.stderr}"
    return found[0]


def status(done: subprocess.CompletedProcess, code: str) -> str:
    return line(done, code).split()[1]


def failed(done: subprocess.CompletedProcess, code: str, *phrases: str) -> str:
    """Assert exit 3 and that check ``code`` failed saying ``phrases``; return its line."""
    assert done.returncode == 3, done.stdout + done.stderr
    text = line(done, code)
    assert text.split()[1] == "FAIL", text
    for phrase in phrases:
        assert phrase in text, text
    return text


@contextmanager
def altered(env: PgEnv, **settings: str) -> Iterator[None]:
    """ALTER SYSTEM + reload, undone afterwards; returns once a new session sees the values."""
    try:
        for name, value in settings.items():
            env.sql(f"alter system set {name} = '{value.replace(chr(39), chr(39) * 2)}'")
        reload_and_wait(env, settings)
        yield
    finally:
        for name in settings:
            env.sql(f"alter system reset {name}")
        env.sql("select pg_reload_conf()")
        time.sleep(0.3)


def reload_and_wait(env: PgEnv, settings: dict[str, str]) -> None:
    env.sql("select pg_reload_conf()")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = dict(env.sql("select name, setting from pg_settings where name = any(%s)", (list(settings),)))
        if all(shown[name] == value for name, value in settings.items()):
            return
        time.sleep(0.05)
    raise AssertionError(f"settings {settings} not applied: {shown}")


def caught_up(env: PgEnv) -> None:
    """Once archiving works again, the archiver stores the segments it could not (a switch wakes it)."""
    env.sql("select txid_current()")  # so that the switch closes a segment
    env.switch_and_wait(30)


def other_policy(env: PgEnv, name: str, change) -> Path:
    """A copy of the env's policy under another file name, changed by ``change(data)``."""
    data = yaml.safe_load(env.policy_path.read_text())
    change(data)
    path = env.base / name
    path.write_text(yaml.safe_dump(data))
    shutil.chown(path, "postgres", "postgres")
    return path


# -- a healthy cluster -------------------------------------------------------------------------------


def test_a_healthy_cluster_passes_every_check(env: PgEnv) -> None:
    done = run_check(env, "--source", "main")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [text.split()[:2] for text in done.stdout.splitlines()[:-1]] == [[code, "ok"] for code in EVERY_CHECK]
    assert "exactly as hadr writes it" in line(done, "archive-command")
    assert "60 s, within the RPO of 300 s" in line(done, "archive-timeout")
    system_id = env.sql("select system_identifier::text from pg_control_system()")[0][0]
    assert f"belongs to this cluster: system identifier {system_id}" in line(done, "archive-identity")
    assert "reached the repository in" in line(done, "archive-end-to-end")
    assert done.stdout.splitlines()[-1] == "check: PASSED"
    # the probe object is gone again
    assert not [p for p in env.repo_dir.iterdir() if p.name.startswith(layout.PROBE)]
    # the JSON twin lists every check
    as_json = json.loads(
        subprocess.run(
            [sys.executable, "-m", "hadr_backup", "--json", "--policy", str(env.policy_path), "check"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        ).stdout
    )
    assert as_json["passed"] is True
    assert [(f["code"], f["level"]) for f in as_json["findings"]] == [(code, "ok") for code in EVERY_CHECK]


def test_the_async_archive_command_passes_too(env: PgEnv) -> None:
    spool = prepare_dir_for_postgres(env.base / "spool")
    env.write_policy(backup_timeout=60, async_archive=True, spool_dir=str(spool))
    try:
        with altered(env, archive_command=archive_command_for(env.policy_path, "main")):
            done = run_check(env)
    finally:
        env.write_policy(backup_timeout=60)
        # the background pusher stores every ready segment while it runs: the tests after this one need it gone
        assert wait_until(lambda: not pusher_running(str(spool / "main")), 30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert line(done, "archive-command").endswith("exactly as hadr writes it (async)")
    assert status(done, "archive-end-to-end") == "ok"


def test_a_bucket_source_that_cannot_be_reached_fails_its_check(env: PgEnv) -> None:
    original = env.policy_path.read_text()
    data = yaml.safe_load(original)
    data["sources"]["buckets"] = [{"name": "items", "endpoint": "http://127.0.0.1:1", "buckets": ["raw"]}]
    env.policy_path.write_text(yaml.safe_dump(data))
    try:
        done = run_check(env)
        unknown = run_check(env, "--source", "nope")
    finally:
        env.policy_path.write_text(original)
    failed(done, "bucket-listable", "cannot reach the S3 endpoint http://127.0.0.1:1")
    assert status(done, "versioning-on") == "skip"
    assert unknown.returncode == 2
    assert "no source named 'nope'" in unknown.stderr and "main, items" in unknown.stderr


# -- settings ----------------------------------------------------------------------------------------


def test_archive_timeout_off_or_above_the_rpo_fails(env: PgEnv) -> None:
    with altered(env, archive_timeout="0"):
        failed(run_check(env), "archive-timeout", "0 (off)", "ALTER SYSTEM SET archive_timeout = '60s'")
    with altered(env, archive_timeout="600"):
        failed(run_check(env), "archive-timeout", "600 s, above the RPO of 300 s")


def test_archive_command_with_another_policy_file_fails(env: PgEnv) -> None:
    copy = other_policy(env, "copy.yaml", lambda data: None)
    with altered(env, archive_command=archive_command_for(copy, "main")):
        done = run_check(env)
    failed(
        done,
        "archive-command",
        f"another policy file, {copy}, not {env.policy_path}",
        f"ALTER SYSTEM SET archive_command = '{archive_command_for(env.policy_path, 'main')}'",
    )
    assert status(done, "archive-end-to-end") == "ok"  # the copy stores into the same repository


def test_archive_command_with_another_source_name_fails(env: PgEnv) -> None:
    with altered(env, archive_command=f"{hadr_command(env.policy_path, 'other', 'wal-push')} %p"):
        done = run_check(env, "--timeout", "2")
    failed(done, "archive-command", "archives as source 'other', not 'main'")
    failed(
        done,
        "archive-end-to-end",
        "did not reach the repository within 2 s",
        "pg_stat_archiver: the last failure was on",
    )
    caught_up(env)


def test_archive_command_that_is_not_hadr_fails_and_nothing_arrives(env: PgEnv) -> None:
    with altered(env, archive_command="true"):
        done = run_check(env)  # no need to wait out the timeout: PostgreSQL counts the segment archived
    failed(done, "archive-command", "'true' is not hadr wal-push")
    failed(done, "archive-end-to-end", "was archived (pg_stat_archiver counts it) but is not in the repository")


def test_archive_mode_off_and_wal_level_minimal_fail(env: PgEnv, pg_cluster_factory) -> None:
    cluster = pg_cluster_factory(settings={"archive_mode": "off", "archive_timeout": "60"})
    policy = other_policy(
        env, "off.yaml", lambda data: data["sources"]["postgres"][0].update(name="off", dsn=cluster.dsn())
    )
    done = run_check(env, policy=policy)
    failed(
        done,
        "archive-mode",
        "off: PostgreSQL archives nothing",
        "ALTER SYSTEM SET archive_mode = on; then restart PostgreSQL",
    )
    assert status(done, "wal-level") == "ok"
    failed(done, "archive-command", "(disabled): archive_mode is off")
    assert line(done, "archive-end-to-end").endswith(
        "skip  off: not checked: archive_mode is off, so no segment is archived"
    )
    cluster.stop()
    cluster.write_settings({"wal_level": "minimal", "max_wal_senders": 0})
    cluster.start()
    failed(
        run_check(env, policy=policy),
        "wal-level",
        "minimal: its WAL cannot restore a base backup",
        "ALTER SYSTEM SET wal_level = replica; then restart PostgreSQL",
    )


# -- the repository ----------------------------------------------------------------------------------


def test_a_wrong_or_missing_key_fails(env: PgEnv) -> None:
    wrong = other_policy(
        env,
        "wrong-key.yaml",
        lambda data: data["encryption"].update(key_file=str(new_key_file(env.base / "other.key"))),
    )
    done = run_check(env, policy=wrong)
    failed(
        done,
        "repository-key",
        "is wrapped by master key",
        "but the master key given is",
        "use the key file the repository was created with",
    )
    assert status(done, "archive-end-to-end") == "skip"
    assert not done.stderr.count("Traceback")
    keyless = other_policy(env, "no-key.yaml", lambda data: data.pop("encryption"))
    failed(run_check(env, policy=keyless), "repository-key", "is encrypted", "and the policy names no key")


def test_an_unwritable_repository_fails(env: PgEnv) -> None:
    env.repo_dir.chmod(0o555)
    try:
        done = run_check(env, as_postgres=True)
    finally:
        env.repo_dir.chmod(0o755)
    failed(
        done,
        "repository-writable",
        "the probe object cannot be created",
        f"{env.repo_dir}/probe-",
        "Permission denied",
        "archive_command runs as the postgres OS user",
    )
    assert status(done, "archive-end-to-end") == "ok"  # WAL folders are still writable


def test_an_unreachable_repository_and_server_fail(env: PgEnv) -> None:
    policy = other_policy(
        env,
        "gone.yaml",
        lambda data: (
            data["repository"].update(path=str(env.base / "missing")),
            data["sources"]["postgres"][0].update(dsn=f"host=127.0.0.1 port={free_port()} user=postgres"),
        ),
    )
    done = run_check(env, policy=policy)
    failed(done, "repository-reachable", f"repository directory {env.base / 'missing'} does not exist")
    failed(done, "server-reachable", "cannot connect to PostgreSQL source main")
    assert status(done, "archive-end-to-end") == "skip"


def test_an_archive_bound_to_another_cluster_fails(env: PgEnv) -> None:
    key = layout.wal_identity("main")
    with open_repo(env.policy, write=True, lock=False, catalog=False) as repo:
        original = repo.store.get_versioned(key).data
        repo.store.delete(key)
        repo.put_json(
            key,
            {
                "system_identifier": 1234567890123456789,
                "segment_size": 16 << 20,
                "page_magic": 0xD110,
                "pg_version": 15,
                "block_size": 8192,
            },
        )
        try:
            done = run_check(env, "--timeout", "2")
        finally:
            repo.store.delete(key)
            repo.store.put(key, [original])
    failed(
        done,
        "archive-identity",
        "belongs to the cluster with system identifier 1234567890123456789",
        "give this cluster its own source name",
    )
    failed(done, "archive-end-to-end", "pg_stat_archiver: the last failure was on")  # wal-push refuses it
    caught_up(env)


def test_broken_archiving_names_the_archivers_last_failure(env: PgEnv) -> None:
    wal_folder = env.repo_dir / "wal" / "main"
    wal_folder.chmod(0o000)  # the postgres OS user (wal-push) cannot look inside; root (the check) can
    try:
        done = run_check(env, "--timeout", "3")
    finally:
        wal_folder.chmod(0o755)
    text = failed(done, "archive-end-to-end", "did not reach the repository within 3 s")
    segment = text.split("segment ", 1)[1][:24]
    assert env.sql("select last_failed_wal from pg_stat_archiver")[0][0] == segment
    assert f"pg_stat_archiver: the last failure was on {segment} at " in text
    assert "the PostgreSQL log has archive_command's error" in text
    caught_up(env)


# -- the role and the clock --------------------------------------------------------------------------


def test_a_role_that_may_not_switch_wal_fails(env: PgEnv) -> None:
    env.sql("create role hadr_check login")
    policy = other_policy(
        env,
        "role.yaml",
        lambda data: data["sources"]["postgres"][0].update(dsn=env.dsn().replace("user=postgres", "user=hadr_check")),
    )
    done = run_check(env, policy=policy)
    failed(
        done,
        "role",
        "hadr_check is not a superuser and may not run pg_switch_wal()",
        "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO hadr_check",
    )
    assert status(done, "archive-end-to-end") == "skip"
    env.sql("grant execute on function pg_switch_wal() to hadr_check")
    granted = run_check(env, policy=policy)
    assert line(granted, "role").split()[1] == "WARN" and "has no REPLICATION" in line(granted, "role")
    assert status(granted, "archive-end-to-end") == "ok"


def test_clock_skew_beyond_the_bound_fails(env: PgEnv) -> None:
    def skew_line(offset: float):
        ctx = EngineContext(env.policy, clock=lambda: time.time() - offset)
        [found] = [f for f in engine("pg").check(ctx, "main", 30).findings if f.code == "clock-skew"]
        return found

    far = skew_line(30)
    assert far.level == "error" and "the server's clock is 30.0" in far.message
    assert "ahead of this host's" in far.message and "more than 5 s" in far.message
    assert "synchronise both clocks" in far.hint
    near = skew_line(-2)
    assert near.level == "warning" and "behind this host's" in near.message
