"""wal-push / wal-fetch on real clusters: PostgreSQL's archive_command and restore_command contract.

Every cluster archives through ``archive_command_for`` (run by the server as the postgres OS user,
in its data directory); files are also pushed and fetched directly through the CLI, as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hadr_backup.policy.load import parse_policy
from hadr_backup.postgres import wal
from hadr_backup.postgres.archive import (
    EXIT_FETCH_FAILED,
    archive_command_for,
    load_identity,
    restore_command_for,
)
from hadr_backup.postgres.walstatus import archive_status
from hadr_backup.procs import log_tail, postgres_user_can, run_as_owner
from hadr_backup.repo.keys import create_key_file
from hadr_backup.repo.repository import init_repo, open_repo

MiB = 1 << 20


@pytest.fixture(autouse=True, scope="module")
def _postgres_can_run_hadr() -> None:
    """archive_command runs hadr as the postgres OS user: when it cannot, every test here fails (a skip
    would hide a broken install)."""
    assert postgres_user_can([sys.executable, "-c", "import hadr_backup"]), (
        f"the postgres OS user cannot run {sys.executable} -c 'import hadr_backup' (run scripts/setup.sh)"
    )


def to_postgres(path: Path) -> Path:
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


@dataclass
class Archive:
    """A policy file, its key and its local (or S3) repository, for source ``main``."""

    dir: Path
    data: dict

    @property
    def policy_file(self) -> Path:
        return self.dir / "policy.yaml"

    @property
    def policy(self):
        return parse_policy(self.data, str(self.policy_file))

    def source(self, **settings) -> None:
        """(Re)write the policy with source ``main`` set as given."""
        entry = {"name": "main", "dsn": "host=127.0.0.1 port=1 user=postgres", **settings}
        self.data["sources"] = {"postgres": [entry]}
        self.policy_file.write_text(yaml.safe_dump(self.data))

    def hadr(self, *args: str, policy_file: Path | None = None, cwd: Path | None = None):
        argv = [sys.executable, "-m", "hadr_backup", "--policy", str(policy_file or self.policy_file), *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300)

    def repo(self):
        return open_repo(self.policy, catalog=False)

    def archived(self) -> wal.ArchivedWal:
        with self.repo() as repo:
            return wal.list_archived(repo, "main")

    def plaintext(self, name: str) -> bytes:
        with self.repo() as repo:
            found = wal.list_archived(repo, "main").find(name)
            assert found is not None, f"{name} is not archived"
            return b"".join(repo.read_object(found.key))

    def cluster(self, factory, **source_settings):
        """A started cluster archiving into this repository (source ``main`` gets its DSN)."""
        self.source(**source_settings)
        cluster = factory(
            settings={"archive_mode": "on", "archive_command": archive_command_for(self.policy_file, "main")}
        )
        self.source(dsn=cluster.dsn(), **source_settings)
        return cluster


def postgres_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return to_postgres(path)


def make_archive(base: Path, repository: dict | None = None) -> Archive:
    key = base / "hadr.key"
    create_key_file(key)
    to_postgres(key)  # the archiver runs as postgres and reads the key (mode 0600)
    if repository is None:
        repository = {"path": str(postgres_dir(base / "repo"))}
    archive = Archive(base, {"repository": repository, "encryption": {"key_file": str(key)}})
    archive.source()
    init_repo(archive.policy)
    return archive


@pytest.fixture
def archive(short_tmp_dir) -> Archive:
    return make_archive(short_tmp_dir)


def make_wal(cluster, count: int) -> list[str]:
    """Write a little and switch ``count`` times; the names of the completed segments."""
    cluster.execute("create table if not exists t(x int)")
    names = []
    for _ in range(count):
        cluster.execute("insert into t select generate_series(1, 1000)")
        names.append(cluster.query("select pg_walfile_name(pg_switch_wal())")[0][0])
    return names


def archiver(cluster) -> tuple[str | None, int]:
    return cluster.query("select last_archived_wal, failed_count from pg_stat_archiver")[0]


def wait_archived(cluster, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (archiver(cluster)[0] or "") < name:
        assert time.monotonic() < deadline, (
            f"{name} was not archived: {archiver(cluster)}; log: {cluster.log_path.read_text()[-2000:]}"
        )
        time.sleep(0.05)


def wait_failed(cluster, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while archiver(cluster)[1] < at_least:
        assert time.monotonic() < deadline, f"archiving did not fail: {archiver(cluster)}"
        time.sleep(0.05)


def copy_segment(cluster, name: str, into: Path, as_name: str | None = None) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    target = into / (as_name or name)
    shutil.copyfile(cluster.data_dir / "pg_wal" / name, target)
    return target


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def repository_files(archive: Archive) -> dict[str, bytes]:
    root = Path(archive.data["repository"]["path"]) / "wal"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- wal-push ----------------------------------------------------------------------------------------


def test_archive_command_stores_segments_bound_to_the_cluster(archive, pg_cluster_factory):
    cluster = archive.cluster(pg_cluster_factory)
    names = make_wal(cluster, 3)
    wait_archived(cluster, names[-1])
    archived = archive.archived()
    assert [f.name for f in archived.segments[1]][-3:] == names
    for name in names:
        plain = archive.plaintext(name)
        assert sha256(plain) == archived.find(name).sha256
        assert plain == (cluster.data_dir / "pg_wal" / name).read_bytes()
    system_identifier = cluster.query("select system_identifier from pg_control_system()")[0][0]
    with archive.repo() as repo:
        identity = load_identity(repo, "main")
        status = archive_status(repo, archive.policy.sources.postgres_named("main"), time.time())
    assert (identity.system_identifier, identity.pg_version, identity.segment_size) == (system_identifier, 15, 16 * MiB)
    assert status.newest_segment == names[-1] and status.lag_segments == 0 and status.cluster is not None


def test_failure_to_store_is_never_reported_as_success(archive, pg_cluster_factory):
    cluster = archive.cluster(pg_cluster_factory)
    first = make_wal(cluster, 1)[0]
    wait_archived(cluster, first)
    folder = Path(archive.data["repository"]["path"]) / "wal" / "main" / first[:16]
    folder.chmod(0o555)  # the archiver (postgres) cannot create files there any more
    try:
        name = make_wal(cluster, 1)[0]
        wait_failed(cluster, 1)
        assert archiver(cluster)[0] == first
        assert (cluster.data_dir / "pg_wal" / "archive_status" / f"{name}.ready").exists()
        assert archive.archived().find(name) is None
    finally:
        folder.chmod(0o755)
    cluster.execute("select pg_switch_wal()")  # wakes the archiver, which retries
    wait_archived(cluster, name)
    assert archive.archived().find(name) is not None


def test_identical_repush_succeeds_and_different_content_fails_and_changes_nothing(
    archive, pg_cluster_factory, short_tmp_dir
):
    cluster = archive.cluster(pg_cluster_factory)
    name = make_wal(cluster, 1)[0]
    wait_archived(cluster, name)
    copy = copy_segment(cluster, name, short_tmp_dir / "copy")
    again = archive.hadr("--json", "wal-push", "--source", "main", str(copy))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "already archived"

    before = repository_files(archive)
    data = bytearray(copy.read_bytes())
    data[5000] ^= 0xFF
    copy.write_bytes(bytes(data))
    different = archive.hadr("wal-push", "--source", "main", str(copy))
    assert different.returncode == 1
    assert name in different.stderr
    assert sha256(bytes(data)) in different.stderr and archive.archived().find(name).sha256 in different.stderr
    assert repository_files(archive) == before


def test_history_files_are_never_overwritten(archive, short_tmp_dir):
    history = short_tmp_dir / "wal" / "00000002.history"
    history.parent.mkdir()
    history.write_text("1\t0/3000158\tno recovery target specified\n")
    for _ in range(2):  # the second push is an identical re-push
        pushed = archive.hadr("wal-push", "--source", "main", str(history))
        assert pushed.returncode == 0, pushed.stderr
    history.write_text("1\t0/4000000\tanother history\n")
    refused = archive.hadr("wal-push", "--source", "main", str(history))
    assert refused.returncode == 1 and "00000002.history" in refused.stderr
    assert archive.plaintext("00000002.history") == b"1\t0/3000158\tno recovery target specified\n"
    fetched = archive.hadr("wal-fetch", "--source", "main", "00000002.history", str(short_tmp_dir / "h"))
    assert fetched.returncode == 0, fetched.stderr
    assert (short_tmp_dir / "h").read_bytes() == b"1\t0/3000158\tno recovery target specified\n"


def test_partial_is_stored_under_its_own_name_and_never_served_for_the_plain_name(archive, pg_cluster, short_tmp_dir):
    segment = "000000010000000000000001"
    partial = copy_segment(pg_cluster, segment, short_tmp_dir / "wal", f"{segment}.partial")
    pushed = archive.hadr("wal-push", "--source", "main", str(partial))
    assert pushed.returncode == 0, pushed.stderr
    archived = archive.archived()
    assert [f.name for f in archived.partials] == [f"{segment}.partial"] and not archived.segments
    assert archived.partials[0].key.endswith(f"/{segment}.partial-{sha256(partial.read_bytes())}")

    plain = archive.hadr("wal-fetch", "--source", "main", segment, str(short_tmp_dir / "plain"))
    assert plain.returncode == 1 and not (short_tmp_dir / "plain").exists()
    fetched = archive.hadr("wal-fetch", "--source", "main", f"{segment}.partial", str(short_tmp_dir / "p"))
    assert fetched.returncode == 0, fetched.stderr
    assert (short_tmp_dir / "p").read_bytes() == partial.read_bytes()


def test_wal_from_another_cluster_is_refused(archive, pg_cluster_factory, short_tmp_dir):
    ours = archive.cluster(pg_cluster_factory)
    name = make_wal(ours, 1)[0]
    wait_archived(ours, name)
    other = pg_cluster_factory(
        settings={"archive_mode": "on", "archive_command": archive_command_for(archive.policy_file, "main")}
    )
    make_wal(other, 1)
    wait_failed(other, 1)
    assert archiver(other)[0] is None

    ours_id = ours.query("select system_identifier from pg_control_system()")[0][0]
    other_id = other.query("select system_identifier from pg_control_system()")[0][0]
    copy = copy_segment(other, "000000010000000000000001", short_tmp_dir / "other")
    refused = archive.hadr("wal-push", "--source", "main", str(copy))
    assert refused.returncode == 1
    assert str(ours_id) in refused.stderr and str(other_id) in refused.stderr
    assert all(f.sha256 != sha256(copy.read_bytes()) for f in archive.archived().all_segments())


# -- wal-fetch ---------------------------------------------------------------------------------------


def test_fetch_exit_codes_absent_corrupt_and_wrong_key(archive, pg_cluster, short_tmp_dir):
    segment = "000000010000000000000001"
    pushed = archive.hadr("wal-push", "--source", "main", str(copy_segment(pg_cluster, segment, short_tmp_dir / "w")))
    assert pushed.returncode == 0, pushed.stderr
    dest_dir = short_tmp_dir / "restore" / "pg_wal"
    dest_dir.mkdir(parents=True)
    dest = dest_dir / "RECOVERYXLOG"

    def fetch(name: str, policy_file: Path | None = None):
        return archive.hadr(
            "wal-fetch", "--prefetch", "0", "--source", "main", name, str(dest), policy_file=policy_file
        )

    assert fetch(segment).returncode == 0
    assert sha256(dest.read_bytes()) == archive.archived().find(segment).sha256
    dest.unlink()
    absent = fetch("000000010000000000000002")
    assert absent.returncode == 1 and not dest.exists()

    wrong_key_dir = short_tmp_dir / "wrong"
    wrong_key_dir.mkdir()
    create_key_file(wrong_key_dir / "hadr.key")
    wrong = dict(archive.data, encryption={"key_file": str(wrong_key_dir / "hadr.key")})
    wrong_policy = wrong_key_dir / "policy.yaml"
    wrong_policy.write_text(yaml.safe_dump(wrong))
    assert fetch(segment, wrong_policy).returncode == EXIT_FETCH_FAILED and not dest.exists()

    stored = Path(archive.data["repository"]["path"]) / archive.archived().find(segment).key
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    stored.write_bytes(bytes(damaged))
    corrupt = fetch(segment)
    assert corrupt.returncode == EXIT_FETCH_FAILED, corrupt.stderr
    assert "could not fetch" in corrupt.stderr
    assert list(dest_dir.iterdir()) == []  # no partial file, no temporary left behind


def test_fetch_from_an_unreachable_s3_endpoint_stops_recovery(short_tmp_dir):
    from hadr_backup.procs import free_port

    archive = Archive(
        short_tmp_dir,
        {
            "repository": {
                "url": "s3://absent-bucket/hadr",
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "access_key": "testing",
                "secret_key": "testing",
            }
        },
    )
    archive.source()
    started = time.monotonic()
    failed = archive.hadr(
        "wal-fetch",
        "--prefetch",
        "0",
        "--source",
        "main",
        "000000010000000000000001",
        str(short_tmp_dir / "RECOVERYXLOG"),
    )
    assert failed.returncode == EXIT_FETCH_FAILED, failed.stderr
    assert "cannot reach" in failed.stderr and not (short_tmp_dir / "RECOVERYXLOG").exists()
    assert time.monotonic() - started < 240


def test_prefetch_serves_verified_segments_and_skips_history_and_partial(archive, pg_cluster_factory, short_tmp_dir):
    cluster = archive.cluster(pg_cluster_factory)
    names = make_wal(cluster, 6)
    wait_archived(cluster, names[-1])
    history = short_tmp_dir / "h" / "00000002.history"
    history.parent.mkdir()
    history.write_text(f"1\t{names[-1][-1]}/0\tfork\n")
    assert archive.hadr("wal-push", "--source", "main", str(history)).returncode == 0
    partial = copy_segment(cluster, names[-1], short_tmp_dir / "h", f"{wal.next_segment(names[-1])}.partial")
    archive.hadr("wal-push", "--source", "main", str(partial))

    pg_wal = short_tmp_dir / "restore" / "pg_wal"
    pg_wal.mkdir(parents=True)
    first = archive.hadr("--json", "wal-fetch", "--source", "main", names[0], str(pg_wal / "RECOVERYXLOG"))
    assert first.returncode == 0 and json.loads(first.stdout)["status"] == "fetched"
    prefetch = pg_wal / ".hadr-prefetch"
    deadline = time.monotonic() + 60
    while sorted(p.name for p in prefetch.iterdir() if not p.name.startswith(".")) != names[1:]:
        assert time.monotonic() < deadline, sorted(p.name for p in prefetch.iterdir())
        time.sleep(0.05)
    for name in names[1:]:
        served = archive.hadr("--json", "wal-fetch", "--source", "main", name, str(pg_wal / "RECOVERYXLOG"))
        assert served.returncode == 0 and json.loads(served.stdout)["status"] == "prefetched"
        assert sha256((pg_wal / "RECOVERYXLOG").read_bytes()) == archive.archived().find(name).sha256
    after = archive.hadr("wal-fetch", "--source", "main", wal.next_segment(names[-1]), str(pg_wal / "RECOVERYXLOG"))
    assert after.returncode == 1  # only its .partial is archived: not served for the plain name
    deadline = time.monotonic() + 30  # a prefetcher still running drops what recovery got past
    while [p.name for p in prefetch.iterdir() if not p.name.startswith(".")]:
        assert time.monotonic() < deadline, list(prefetch.iterdir())
        time.sleep(0.05)


def test_recovery_through_restore_command_replays_the_archive(archive, pg_cluster_factory, short_tmp_dir):
    from hadr_backup.procs import free_port
    from hadr_backup.sandbox.servers import PostgresCluster

    cluster = archive.cluster(pg_cluster_factory)
    make_wal(cluster, 1)
    backup = short_tmp_dir / "restored"
    run_as_owner(
        [
            str(cluster.tool("pg_basebackup")),
            "-D",
            str(backup / "data"),
            "-X",
            "none",
            "-d",
            cluster.dsn(),
            "--checkpoint=fast",
        ]
    )
    names = make_wal(cluster, 12)
    wait_archived(cluster, names[-1])
    expected = cluster.query("select count(*) from t")[0][0]

    restored = PostgresCluster(
        backup,
        free_port(),
        settings={
            "restore_command": restore_command_for(archive.policy_file, "main"),
            "recovery_target_action": "promote",
            "archive_mode": "off",
        },
    )
    restored.write_settings({})
    (backup / "data" / "recovery.signal").touch()
    to_postgres(backup / "data" / "recovery.signal")
    try:
        restored.start(timeout=120)
        deadline = time.monotonic() + 120
        while _in_recovery(restored):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert restored.query("select count(*) from t")[0][0] == expected
        log = restored.log_path.read_text()
        assert f'restored log file "{names[-1]}" from archive' in log
    finally:
        restored.stop("immediate")


def _in_recovery(restored) -> bool:
    """pg_is_in_recovery(); a server that went away fails with its log (what wal-fetch and PostgreSQL said)."""
    import psycopg

    try:
        return restored.query("select pg_is_in_recovery()")[0][0]
    except psycopg.OperationalError as error:
        raise AssertionError(
            f"the restored server is gone ({error}); its log:\n{log_tail(restored.log_path, 40)}"
        ) from error


# -- async mode --------------------------------------------------------------------------------------


def test_async_pushes_the_backlog_in_parallel_and_acknowledges_only_stored_files(
    archive, pg_cluster_factory, short_tmp_dir
):
    spool = postgres_dir(short_tmp_dir / "spool")
    settings = {"async_archive": True, "spool_dir": str(spool), "archive_workers": 2}
    archive.source(**settings)
    cluster = pg_cluster_factory(settings={"archive_mode": "on", "archive_command": "/bin/false"})
    archive.source(dsn=cluster.dsn(), **settings)
    names = make_wal(cluster, 12)
    blocked = names[5]
    with open_repo(archive.policy, write=True, lock=False, catalog=False) as repo:
        repo.put_object(wal.wal_object_key("main", blocked, "0" * 64), [b"someone else's segment"])
    failures = archiver(cluster)[1]

    cluster.set(archive_command=archive_command_for(archive.policy_file, "main"))
    wait_archived(cluster, names[4])
    wait_failed(cluster, failures + 1)
    time.sleep(1.0)
    assert archiver(cluster)[0] == names[4]  # never past the file that could not be stored
    status = cluster.data_dir / "pg_wal" / "archive_status"
    assert (status / f"{blocked}.ready").exists()
    done = spool / "main" / "done"
    assert not (done / blocked).exists()
    assert archive.archived().find(names[6]) is not None  # stored meanwhile, yet not acknowledged
    assert (status / f"{names[6]}.ready").exists()

    with open_repo(archive.policy, write=True, lock=False, catalog=False) as repo:
        repo.store.delete(wal.wal_object_key("main", blocked, "0" * 64))
    cluster.execute("select pg_switch_wal()")
    wait_archived(cluster, names[-1])
    archived = archive.archived()
    for name in names:
        assert archived.find(name) is not None and sha256(archive.plaintext(name)) == archived.find(name).sha256
    log = (spool / "main" / "pusher.log").read_text()
    assert "up to 2 at once" in log, log


def test_async_acknowledges_a_stored_file_cheaply_and_only_that_very_file(archive, pg_cluster, short_tmp_dir):
    from hadr_backup.postgres.spool import acknowledged, pusher_running

    archive.source(async_archive=True, archive_workers=2)
    data = short_tmp_dir / "data"
    segment = copy_segment(pg_cluster, "000000010000000000000001", data / "pg_wal")
    (data / "pg_wal" / "archive_status").mkdir()
    (data / "pg_wal" / "archive_status" / f"{segment.name}.ready").touch()
    spool, repo_root = data / "pg_wal" / ".hadr-spool" / "main", archive.data["repository"]["path"]
    pushed = archive.hadr("wal-push", "--source", "main", str(segment))
    assert pushed.returncode == 0, pushed.stderr
    assert acknowledged(str(spool), str(segment), repo_root)
    deadline = time.monotonic() + 30
    while pusher_running(str(spool)):  # let the pusher finish, or it would store the new file below at once
        assert time.monotonic() < deadline
        time.sleep(0.05)

    command = archive_command_for(archive.policy_file, "main")
    no_interpreter = command.replace(sys.executable, "/nonexistent/python")

    def archive_command(text: str) -> subprocess.CompletedProcess:  # as the archiver runs it
        return subprocess.run(
            text.replace("%p", f"pg_wal/{segment.name}"), shell=True, capture_output=True, text=True, cwd=data
        )

    assert archive_command(no_interpreter).returncode == 0  # the shell test alone answered
    links = list((spool / "link").iterdir())
    assert [p.name for p in links] == [f"{segment.name}-{sha256(segment.read_bytes())}"]
    links[0].unlink()
    assert archive_command(no_interpreter).returncode == 127
    acked = archive_command(command)
    assert acked.returncode == 0 and acked.stdout == ""  # the lean acknowledger answered from the marker

    replacement = segment.with_name("copy")
    shutil.copyfile(segment, replacement)
    replacement.replace(segment)  # same bytes, another file: the marker no longer vouches for it
    assert not acknowledged(str(spool), str(segment), repo_root)
    assert archive_command(no_interpreter).returncode == 127
    again = archive_command(command)  # stored again by a pusher (an identical re-push), then acknowledged
    assert again.returncode == 0, again.stderr
    assert acknowledged(str(spool), str(segment), repo_root)


# -- S3 ----------------------------------------------------------------------------------------------


def test_push_and_fetch_on_s3(s3_server, s3_bucket, pg_cluster_factory, short_tmp_dir):
    archive = make_archive(
        short_tmp_dir,
        {
            "url": f"s3://{s3_bucket}/hadr",
            "endpoint": s3_server.endpoint_url,
            "access_key": "testing",
            "secret_key": "testing",
            "lock_dir": str(short_tmp_dir / "locks"),
        },
    )
    cluster = archive.cluster(pg_cluster_factory)
    names = make_wal(cluster, 2)
    wait_archived(cluster, names[-1])
    dest = short_tmp_dir / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    for name in names:
        fetched = archive.hadr("wal-fetch", "--prefetch", "0", "--source", "main", name, str(dest))
        assert fetched.returncode == 0, fetched.stderr
        assert dest.read_bytes() == (cluster.data_dir / "pg_wal" / name).read_bytes()
    absent = archive.hadr("wal-fetch", "--prefetch", "0", "--source", "main", wal.next_segment(names[-1]), str(dest))
    assert absent.returncode == 1


# -- commands and status -----------------------------------------------------------------------------


def test_commands_for_postgresql_conf(archive):
    push = archive_command_for(archive.policy_file, "main")
    assert push.endswith(f"--policy {archive.policy_file} wal-push --source main %p")
    assert restore_command_for(archive.policy_file, "main").endswith("wal-fetch --source main %f %p")
    archive.source(async_archive=True)
    lean = archive_command_for(archive.policy_file, "main")
    assert " -S " in lean and "/hadr_backup/postgres/walack.py " in lean and lean.endswith(push)


def test_archive_status_measures_the_lag(archive, pg_cluster_factory):
    cluster = archive.cluster(pg_cluster_factory)
    first = make_wal(cluster, 1)[0]
    wait_archived(cluster, first)
    cluster.set(archive_command="/bin/false")
    make_wal(cluster, 3)
    wait_failed(cluster, 1)
    with archive.repo() as repo:
        status = archive_status(repo, "main", time.time() + 30)
    assert status.newest_segment == first
    assert status.lag_segments == 3 and status.lag_bytes >= 3 * 16 * MiB
    assert status.lag_seconds >= 30 and status.cluster["failed_count"] >= 1
    assert json.loads(json.dumps(status.to_json()))["lag_segments"] == 3
