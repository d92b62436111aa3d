"""wal-push rides out S3 throttling and refused connections within repository.retry, and says why when not.

A fault-injecting proxy (tests/faultproxy.py) stands between hadr and the S3 endpoint (moto): it
answers 503 SlowDown to PUTs (the first N, or for a while), 403 to PUTs, or is not listening yet.
The segment pushed is a real one (written by initdb).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hadr_backup.policy.load import parse_policy
from hadr_backup.procs import free_port, prepare_dir_for_postgres
from hadr_backup.repo.repository import init_repo
from hadr_backup.sandbox.servers import PostgresCluster
from tests.faultproxy import FaultProxy
from tests.helpers import hadr_cli, wal_policy_data, write_policy

SEGMENT = "000000010000000000000001"


@pytest.fixture(scope="module")
def real_segment() -> Iterator[Path]:
    """A copy of the first WAL segment of a fresh cluster (initdb only: no server is started)."""
    base = prepare_dir_for_postgres(tempfile.mkdtemp(prefix="hadr-seg-", dir="/tmp"))
    try:
        cluster = PostgresCluster(base, free_port())
        cluster.init()
        copy = base / "wal" / SEGMENT
        copy.parent.mkdir()
        shutil.copyfile(cluster.data_dir / "pg_wal" / SEGMENT, copy)
        yield copy
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Pusher:
    """An S3 repository, initialised directly; ``policy(endpoint, retry)`` writes a policy file for it."""

    def __init__(self, s3_server, bucket: str, base: Path):
        self.s3_server, self.bucket, self.base = s3_server, bucket, base
        self.repository = {
            "url": f"s3://{bucket}/hadr",
            "access_key": "testing",
            "secret_key": "testing",
            "lock_dir": str(base / "locks"),
        }
        direct = self.policy_file(s3_server.endpoint_url)
        init_repo(parse_policy(yaml.safe_load(direct.read_text()), str(direct)))

    def policy_file(self, endpoint: str, retry: dict | None = None, **source) -> Path:
        repository = {**self.repository, "endpoint": endpoint, **({"retry": retry} if retry else {})}
        return write_policy(
            self.base / f"policy-{len(list(self.base.glob('policy-*')))}.yaml", wal_policy_data(repository, **source)
        )

    def stored(self, name: str) -> list[str]:
        listed = self.s3_server.client().list_objects_v2(Bucket=self.bucket, Prefix="hadr/wal/main/")
        return [item["Key"] for item in listed.get("Contents", []) if f"/{name}-" in item["Key"]]

    def fetched(self, name: str) -> bytes:
        dest = self.base / "fetched"
        done = hadr_cli(self.policy_file(self.s3_server.endpoint_url), "wal-fetch", "--prefetch", "0", name, str(dest))
        assert done.returncode == 0, done.stderr
        return dest.read_bytes()


@pytest.fixture
def pusher(s3_server, s3_bucket, short_tmp_dir) -> Pusher:
    return Pusher(s3_server, s3_bucket, short_tmp_dir)


def push(policy_file: Path, segment: Path):
    started = time.monotonic()
    done = hadr_cli(policy_file, "--json", "wal-push", str(segment))
    return done, time.monotonic() - started


def assert_stored_once(pusher: Pusher, proxy: FaultProxy, segment: Path) -> None:
    assert len(pusher.stored(SEGMENT)) == 1
    assert len(proxy.requests("PUT", faulted=False, path=f"/{SEGMENT}-")) == 1  # one upload reached S3
    assert pusher.fetched(SEGMENT) == segment.read_bytes()


def test_throttled_uploads_are_retried_and_stored_once(pusher, real_segment):
    with FaultProxy(pusher.s3_server.endpoint_url) as proxy:
        proxy.fail(method="PUT", status=503, code="SlowDown", times=5)  # more than the S3 client's own 3 tries
        done, _ = push(pusher.policy_file(proxy.endpoint_url), real_segment)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "stored" and result["attempts"] >= 2
        assert len(proxy.requests("PUT", faulted=True)) == 5
        assert_stored_once(pusher, proxy, real_segment)


def test_a_throttling_window_of_two_seconds_is_ridden_out(pusher, real_segment):
    with FaultProxy(pusher.s3_server.endpoint_url) as proxy:
        proxy.fail(method="PUT", status=503, code="SlowDown", seconds=2.0)
        done, seconds = push(pusher.policy_file(proxy.endpoint_url), real_segment)
        assert done.returncode == 0, done.stderr
        throttled = proxy.requests("PUT", faulted=True)
        assert throttled and seconds >= 2.0
        answered = proxy.requests("PUT", faulted=False)
        assert answered[0].at - throttled[0].at >= 2.0  # no PUT got through inside the window
        assert_stored_once(pusher, proxy, real_segment)


def test_a_refused_connection_until_the_endpoint_comes_up(pusher, real_segment):
    port = free_port()
    policy_file = pusher.policy_file(f"http://127.0.0.1:{port}")
    with FaultProxy(pusher.s3_server.endpoint_url, port=port, start_in=2.0) as proxy:
        done, _ = push(policy_file, real_segment)
        returned = time.monotonic()
        assert done.returncode == 0, done.stderr
        pushing_since = returned - json.loads(done.stdout)["seconds"]
        assert proxy.started_at is not None and pushing_since < proxy.started_at  # so it was refused at first
        assert_stored_once(pusher, proxy, real_segment)


def test_throttling_outlasting_the_attempts_fails_with_the_cause(pusher, real_segment):
    with FaultProxy(pusher.s3_server.endpoint_url) as proxy:
        proxy.fail(method="PUT", status=503, code="SlowDown")
        done, _ = push(pusher.policy_file(proxy.endpoint_url, {"attempts": 3, "max_seconds": 60}), real_segment)
        assert done.returncode == 1, done.stderr
        assert f"could not store {SEGMENT}" in done.stderr and "SlowDown" in done.stderr
        assert "gave up after 3 attempts" in done.stderr and "repository.retry" in done.stderr
        assert not proxy.requests("PUT", faulted=False) and pusher.stored(SEGMENT) == []


def test_throttling_outlasting_max_seconds_fails_in_time(pusher, real_segment):
    with FaultProxy(pusher.s3_server.endpoint_url) as proxy:
        proxy.fail(method="PUT", status=503, code="SlowDown")
        done, seconds = push(pusher.policy_file(proxy.endpoint_url, {"attempts": 100, "max_seconds": 3}), real_segment)
        assert done.returncode == 1, done.stderr
        assert "SlowDown" in done.stderr and "repository.retry allows 100 in 3s" in done.stderr
        attempts = int(done.stderr.split("gave up after ")[1].split(" attempt")[0])
        assert attempts < 100 and len(proxy.requests("PUT", faulted=True)) >= 3 * attempts
        assert seconds < 25  # the bound, one last attempt (with the S3 client's own retries) and start-up;
        # without the bound, 100 attempts would take minutes


def test_permanent_errors_are_not_retried(pusher, real_segment):
    with FaultProxy(pusher.s3_server.endpoint_url) as proxy:
        proxy.fail(method="PUT", status=403, code="AccessDenied")
        done, _ = push(pusher.policy_file(proxy.endpoint_url), real_segment)
        assert done.returncode == 1 and "denied" in done.stderr, done.stderr
        assert len(proxy.requests("PUT", faulted=True)) == 1


def test_the_async_pusher_retries_too(pusher, real_segment, short_tmp_dir):
    pg_wal = short_tmp_dir / "data" / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    segment = pg_wal / SEGMENT
    shutil.copyfile(real_segment, segment)
    (pg_wal / "archive_status" / f"{SEGMENT}.ready").touch()
    with FaultProxy(pusher.s3_server.endpoint_url) as proxy:
        proxy.fail(method="PUT", status=503, code="SlowDown", times=5)
        done, _ = push(pusher.policy_file(proxy.endpoint_url, async_archive=True), segment)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "stored by the async pusher"
        log = (pg_wal / ".hadr-spool" / "main" / "pusher.log").read_text()
        assert "SlowDown" in log and "retrying in" in log, log
        assert not (pg_wal / ".hadr-spool" / "main" / "error" / SEGMENT).exists()
        assert_stored_once(pusher, proxy, segment)
