"""wal-fetch never answers "absent" because it could not look (exit 1 only for a confirmed absence).

An unreadable WAL folder, a missing repository root, an unmounted (empty) mount point, an archive
that is gone, and S3 listings refused (403) or failing (500, also on a later page) all exit 200, so
that PostgreSQL stops recovery instead of promoting early. wal-fetch runs as the postgres OS user, as
PostgreSQL runs restore_command (root would read a chmod 000 folder anyway).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from hadr_backup.errors import StorageUnreadable, TransientStorageError
from hadr_backup.policy.load import parse_policy
from hadr_backup.postgres.archive import EXIT_FETCH_FAILED, archive_command_for, hadr_command
from hadr_backup.procs import free_port, postgres_user_can, prepare_dir_for_postgres, run_as_owner
from hadr_backup.repo.repository import init_repo
from hadr_backup.repo.s3 import S3Storage
from hadr_backup.sandbox.servers import PostgresCluster, s3_client
from hadr_backup.verify.repo import run_verify_repo
from tests.faultproxy import FaultProxy
from tests.helpers import hadr_cli, seed_wal, wal_policy_data, write_policy

pytestmark = pytest.mark.skipif(
    not postgres_user_can([sys.executable, "-c", "import hadr_backup"]),
    reason=f"the postgres OS user cannot run {sys.executable}",
)

FOLDER = "wal/main/0000000100000000"
PRESENT, ABSENT = "000000010000000000000003", "000000010000000000000004"


class Fetcher:
    """A policy file for a repository holding segment PRESENT, and wal-fetch into a pg_wal of postgres."""

    def __init__(self, base: Path, repository: dict):
        self.base = base
        self.policy_file = write_policy(base / "policy.yaml", wal_policy_data(repository))
        self.pg_wal = prepare_dir_for_postgres(base / "restore" / "pg_wal")

    @property
    def policy(self):
        return parse_policy(yaml.safe_load(self.policy_file.read_text()), str(self.policy_file))

    def fetch(self, name: str, policy_file: Path | None = None):
        return hadr_cli(
            policy_file or self.policy_file,
            "wal-fetch",
            "--prefetch",
            "0",
            "--source",
            "main",
            name,
            str(self.pg_wal / "RECOVERYXLOG"),
            as_postgres=True,
        )

    def assert_stops_recovery(self, name: str, *needles: str, policy_file: Path | None = None) -> str:
        fetched = self.fetch(name, policy_file)
        assert fetched.returncode == EXIT_FETCH_FAILED, (fetched.returncode, fetched.stderr)
        assert f"could not fetch {name}" in fetched.stderr or f"cannot fetch {name}" in fetched.stderr
        for needle in needles:
            assert needle in fetched.stderr, fetched.stderr
        assert not (self.pg_wal / "RECOVERYXLOG").exists()
        return fetched.stderr


@pytest.fixture
def local(short_tmp_dir) -> Fetcher:
    fetcher = Fetcher(short_tmp_dir, {"path": str(prepare_dir_for_postgres(short_tmp_dir / "repo"))})
    init_repo(fetcher.policy)
    seed_wal(fetcher.policy, {PRESENT: b"segment three"})
    return fetcher


def test_absent_only_when_confirmed_and_200_when_the_wal_folder_is_unreadable(local):
    assert local.fetch(PRESENT).returncode == 0
    assert (local.pg_wal / "RECOVERYXLOG").read_bytes() == b"segment three"
    (local.pg_wal / "RECOVERYXLOG").unlink()
    absent = local.fetch(ABSENT)
    assert absent.returncode == 1 and "not in the archive" in absent.stderr

    folder = Path(local.policy.repository.path) / FOLDER
    folder.chmod(0o000)
    try:
        for name in (ABSENT, PRESENT):
            local.assert_stops_recovery(name, str(folder), "Permission denied", "EACCES")
    finally:
        folder.chmod(0o755)
    assert local.fetch(ABSENT).returncode == 1


def test_unreadable_source_folder_and_a_file_in_place_of_the_folder(local):
    source_folder = Path(local.policy.repository.path) / "wal" / "main"
    source_folder.chmod(0o000)
    try:
        local.assert_stops_recovery(ABSENT, "Permission denied")
    finally:
        source_folder.chmod(0o755)
    shutil.rmtree(source_folder / "0000000100000000")
    (source_folder / "0000000100000000").write_text("not a folder")
    local.assert_stops_recovery(ABSENT, "ENOTDIR")


def test_missing_repository_root_and_unmounted_empty_mount_point(local, short_tmp_dir):
    gone = write_policy(short_tmp_dir / "gone.yaml", wal_policy_data({"path": str(short_tmp_dir / "no-such-dir")}))
    local.assert_stops_recovery(ABSENT, "does not exist", policy_file=gone)
    mount_point = prepare_dir_for_postgres(short_tmp_dir / "mnt")  # an empty directory: nothing mounted on it
    unmounted = write_policy(short_tmp_dir / "unmounted.yaml", wal_policy_data({"path": str(mount_point)}))
    local.assert_stops_recovery(ABSENT, "there is no hadr repository", policy_file=unmounted)


def test_an_archive_that_is_gone_or_never_was_is_not_an_absence(local):
    never = write_policy(
        local.base / "never.yaml", wal_policy_data({"path": local.policy.repository.path}, name="other")
    )
    fetched = hadr_cli(
        never,
        "wal-fetch",
        "--prefetch",
        "0",
        "--source",
        "other",
        ABSENT,
        str(local.pg_wal / "RECOVERYXLOG"),
        as_postgres=True,
    )
    assert fetched.returncode == EXIT_FETCH_FAILED
    assert "nothing was ever archived for source 'other'" in fetched.stderr, fetched.stderr
    shutil.rmtree(Path(local.policy.repository.path) / "wal" / "main")
    local.assert_stops_recovery(ABSENT, "nothing was ever archived for source 'main'", "or the archive is gone")


def test_verify_reports_a_listing_it_could_not_make(local):
    folder = Path(local.policy.repository.path) / FOLDER
    folder.chmod(0o000)
    try:
        verified = hadr_cli(local.policy_file, "--json", "verify", "repo", as_postgres=True)
    finally:
        folder.chmod(0o755)
    assert verified.returncode == 3, verified.stdout + verified.stderr
    findings = json.loads(verified.stdout)["findings"]
    failed = [f for f in findings if f["code"] == "listing-failed"]
    # the source's archive, and the sweep for leftovers of interrupted writes, both could not look there
    assert sorted(f["subject"] for f in failed) == ["(leftovers)", "pg main"]
    assert all("Permission denied" in f["message"] for f in failed)
    assert hadr_cli(local.policy_file, "verify", "repo", as_postgres=True).returncode == 0


# -- S3: listings refused or failing, through a fault-injecting proxy --------------------------------------


@pytest.fixture
def s3(s3_server, s3_bucket, short_tmp_dir):
    """(fetcher whose policy goes through the proxy, proxy): the bucket holds segment PRESENT."""
    repository = {
        "url": f"s3://{s3_bucket}/hadr",
        "access_key": "testing",
        "secret_key": "testing",
        "lock_dir": str(short_tmp_dir / "locks"),
    }
    direct = Fetcher(short_tmp_dir, {**repository, "endpoint": s3_server.endpoint_url})
    init_repo(direct.policy)
    seed_wal(direct.policy, {PRESENT: b"segment three"})
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield Fetcher(short_tmp_dir, {**repository, "endpoint": proxy.endpoint_url}), proxy


def test_s3_listing_refused_403_stops_recovery(s3):
    fetcher, proxy = s3
    proxy.fail(query="list-type=2", status=403, code="AccessDenied")
    fetcher.assert_stops_recovery(ABSENT, "AccessDenied", "denied")
    assert proxy.requests("GET", faulted=True)  # the listing was asked for, and refused
    proxy.clear()
    assert fetcher.fetch(ABSENT).returncode == 1  # the same absence, confirmed this time


def test_s3_listing_failing_500_stops_recovery(s3):
    fetcher, proxy = s3
    proxy.fail(query="list-type=2", status=500, code="InternalError")
    fetcher.assert_stops_recovery(ABSENT, "InternalError", "HTTP 500")
    assert len(proxy.requests("GET", faulted=True)) >= 3  # the S3 client and hadr retried before giving up


@pytest.mark.parametrize(
    "status, code, error", [(500, "InternalError", TransientStorageError), (403, "AccessDenied", StorageUnreadable)]
)
def test_s3_error_on_a_later_page_fails_the_whole_listing(s3_server, s3_bucket, status, code, error):
    with FaultProxy(s3_server.endpoint_url) as proxy:
        client = s3_client(proxy.endpoint_url, "testing", "testing")
        client.meta.events.register(
            "before-parameter-build.s3.ListObjectsV2", lambda params, **kwargs: params.setdefault("MaxKeys", 2)
        )
        store = S3Storage(s3_bucket, "hadr", client=client, endpoint=proxy.endpoint_url)
        names = [f"{FOLDER}/00000001000000000000000{n}-{'a' * 64}" for n in range(1, 6)]
        for name in names:
            store.put(name, [b"x"])
        assert [info.key for info in store.list(f"{FOLDER}/")] == names
        pages = len(proxy.requests("GET", path=f"/{s3_bucket}"))
        assert pages == 3  # 5 keys, 2 a page: the listing really is paged
        proxy.fail(query="continuation-token", status=status, code=code)
        listing, seen = store.list(f"{FOLDER}/"), []  # the first page is answered: the listing opens
        with pytest.raises(error, match=code):
            for info in listing:
                seen.append(info.key)
        assert seen == names[:2]  # the first page's objects, then the error: never a shorter listing that ends
        first_pages = [s for s in proxy.requests("GET", faulted=False) if "continuation-token" not in s.query]
        assert len(first_pages) == 2  # each listing's first page was answered: the error came on a later one


def test_verify_reports_an_s3_listing_refused(s3):
    fetcher, proxy = s3
    proxy.fail(query="list-type=2", status=403, code="AccessDenied")
    report = run_verify_repo(fetcher.policy)
    failed = [f for f in report.findings if f.code == "listing-failed"]
    assert {f.subject for f in failed} == {"backups/", "pg main"} and report.exit_code == 3
    assert all("AccessDenied" in f.message for f in failed)


# -- a real recovery ---------------------------------------------------------------------------------------


def make_segments(cluster: PostgresCluster, count: int) -> list[str]:
    names = []
    for _ in range(count):
        cluster.execute("insert into t select generate_series(1, 1000)")
        names.append(cluster.query("select pg_walfile_name(pg_switch_wal())")[0][0])
    return names


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_recovery_stops_instead_of_promoting_when_the_wal_folder_becomes_unreadable(pg_cluster_factory, short_tmp_dir):
    from hadr_backup.errors import ServerError
    from hadr_backup.postgres.archive import restore_command_for

    repo_dir = prepare_dir_for_postgres(short_tmp_dir / "repo")
    policy_file = write_policy(short_tmp_dir / "policy.yaml", wal_policy_data({"path": str(repo_dir)}))
    init_repo(parse_policy(yaml.safe_load(policy_file.read_text()), str(policy_file)))
    cluster = pg_cluster_factory(
        settings={"archive_mode": "on", "archive_command": archive_command_for(policy_file, "main")}
    )
    cluster.execute("create table t(x int)")
    backup = short_tmp_dir / "restored"
    run_as_owner(
        [
            cluster.tool("pg_basebackup"),
            "-D",
            str(backup / "data"),
            "-X",
            "none",
            "-d",
            cluster.dsn(),
            "--checkpoint=fast",
        ]
    )
    names = make_segments(cluster, 8)
    wait_until(
        lambda: (cluster.query("select last_archived_wal from pg_stat_archiver")[0][0] or "") >= names[-1],
        60,
        "the segments were not archived",
    )
    expected = cluster.query("select count(*) from t")[0][0]

    # recovery reaches a consistent state, then the WAL folder turns unreadable before segment `trip`
    folder, trip = repo_dir / FOLDER, names[5]
    fetch = f"{hadr_command(policy_file, 'main', 'wal-fetch', '--prefetch', '0')} %f %p"
    restored = PostgresCluster(
        backup,
        free_port(),
        settings={
            "restore_command": f"if [ %f = {trip} ]; then chmod 000 {folder}; fi; {fetch}",
            "recovery_target_action": "promote",
            "archive_mode": "off",
        },
    )
    restored.write_settings({})
    (backup / "data" / "recovery.signal").touch()
    shutil.chown(backup / "data" / "recovery.signal", "postgres", "postgres")
    try:
        try:
            restored.start(timeout=60)
        except ServerError:
            pass  # recovery may stop before the server accepts connections
        wait_until(lambda: not restored.is_running, 60, "recovery went on past the unreadable folder")
        log = restored.log_path.read_text()
        assert f'could not restore file "{trip}" from archive: child process exited with exit code 200' in log, log
        assert f"could not fetch {trip}" in log and "Permission denied" in log
        assert "selected new timeline ID" not in log and "archive recovery complete" not in log
        assert not (backup / "data" / "pg_wal" / "00000002.history").exists()

        folder.chmod(0o755)  # the cause fixed, recovery resumes and nothing is lost
        restored.write_settings({"restore_command": restore_command_for(policy_file, "main")})
        restored.start(timeout=120)
        wait_until(lambda: not restored.query("select pg_is_in_recovery()")[0][0], 120, "recovery did not end")
        assert restored.query("select count(*) from t")[0][0] == expected
    finally:
        folder.chmod(0o755)
        restored.stop("immediate")
