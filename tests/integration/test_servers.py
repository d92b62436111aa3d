"""The real-server helpers: each server starts, answers, stops leaving no process; failures carry the log."""

from __future__ import annotations

import os
import pwd
import socket
import time
from pathlib import Path

import pytest

from hadr_backup.errors import ServerError
from hadr_backup.procs import (
    free_port,
    pid_alive,
    port_open,
    prepare_dir_for_postgres,
    running_as_root,
    stop_pid,
)
from hadr_backup.sandbox.servers import PostgresCluster, RedisServer, S3Server


@pytest.fixture
def taken_port():
    """A port some other process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def assert_gone(pid: int | None, port: int) -> None:
    assert pid is not None
    assert not pid_alive(pid), f"process {pid} is still alive"
    assert not port_open(port), f"port {port} is still open"


# -- PostgreSQL -------------------------------------------------------------------------------------


def test_postgres_cluster_starts_answers_and_stops(short_tmp_dir: Path) -> None:
    settings = {"archive_mode": "on", "archive_command": "/bin/true", "archive_timeout": "60"}
    with PostgresCluster(short_tmp_dir / "pg", free_port(), settings=settings) as pg:
        pid, port = pg.pid, pg.port
        assert pg.query("SELECT 1") == [(1,)]
        assert pg.query("SHOW data_checksums") == [("on",)]
        assert pg.query("SHOW archive_command") == [("/bin/true",)]
        assert pg.query("SHOW listen_addresses") == [("127.0.0.1",)]
        pg.execute("CREATE DATABASE other")
        pg.execute("CREATE TABLE t (x int)", dbname="other")
        pg.execute("INSERT INTO t VALUES (%s)", (41,), dbname="other")
        assert pg.query("SELECT x + 1 FROM t", dbname="other") == [(42,)]
        assert f"port={port}" in pg.dsn("other") and "dbname=other" in pg.dsn("other")
    assert_gone(pid, port)
    pg.stop()  # idempotent


def test_postgres_cluster_stops_even_when_the_body_fails(short_tmp_dir: Path) -> None:
    with pytest.raises(RuntimeError):
        with PostgresCluster(short_tmp_dir / "pg", free_port()) as pg:
            pid, port = pg.pid, pg.port
            raise RuntimeError("boom")
    assert_gone(pid, port)


def test_postgres_set_restart_and_reload(pg_cluster: PostgresCluster) -> None:
    pg_cluster.set(work_mem="7MB")
    assert pg_cluster.query("SHOW work_mem") == [("7MB",)]
    pg_cluster.reload()
    pg_cluster.stop("fast")
    assert not pg_cluster.is_running
    pg_cluster.start()
    assert pg_cluster.query("SHOW work_mem") == [("7MB",)]  # ALTER SYSTEM survives a restart


def test_postgres_start_on_taken_port_raises_with_log_tail(short_tmp_dir: Path, taken_port: int) -> None:
    cluster = PostgresCluster(short_tmp_dir / "pg", taken_port)
    cluster.init()
    with pytest.raises(ServerError) as failure:
        cluster.start(timeout=20)
    assert "Address already in use" in str(failure.value)
    assert not cluster.is_running
    cluster.stop()


def test_archive_command_can_write_into_tmp_repo_dir(pg_cluster_factory, tmp_repo_dir: Path) -> None:
    pg = pg_cluster_factory(settings={"archive_mode": "on", "archive_command": f"cp %p {tmp_repo_dir}/%f"})
    pg.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    segment = pg.query("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 30
    archived = "SELECT last_archived_wal FROM pg_stat_archiver"
    while pg.query(archived)[0][0] != segment and time.monotonic() < deadline:  # cp is done, not only begun
        time.sleep(0.1)
    assert (tmp_repo_dir / segment).stat().st_size == 16 * 1024 * 1024


def test_prepare_dir_for_postgres(short_tmp_dir: Path) -> None:
    made = prepare_dir_for_postgres(short_tmp_dir / "a" / "b")
    assert made.is_dir()
    if running_as_root():
        assert made.stat().st_uid == pwd.getpwnam("postgres").pw_uid


# -- Redis ------------------------------------------------------------------------------------------


def test_redis_server_starts_answers_and_stops(redis_factory) -> None:
    server = redis_factory(appendonly=True, aof_timestamp=True, extra={"appendfsync": "everysec"})
    client = server.client()
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("aof-timestamp-enabled")["aof-timestamp-enabled"] == "yes"
    assert client.config_get("save")["save"] == ""
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    pid = server.pid
    server.stop()
    assert_gone(pid, server.port)
    server.stop()  # idempotent
    assert (server.dir / "appendonlydir").is_dir()


def test_redis_server_on_taken_port_raises_with_log_tail(short_tmp_dir: Path, taken_port: int) -> None:
    server = RedisServer(short_tmp_dir / "redis", taken_port)
    with pytest.raises(ServerError) as failure:
        server.start(timeout=10)
    assert "Address already in use" in str(failure.value)
    assert server.pid is None


def test_redis_attach_stops_a_detached_server(short_tmp_dir: Path) -> None:
    server = RedisServer(short_tmp_dir / "redis", free_port())
    server.start(detach=True)
    pid = server.pid
    try:
        handle = RedisServer.attach(server.dir, server.port, pid=pid)
        assert handle.pid == pid
        handle.stop()
        assert_gone(pid, server.port)  # our child is now a zombie at most, which counts as gone
    finally:
        server.stop()
    assert RedisServer.attach(server.dir, server.port, pid=os.getpid()).pid is None  # not a redis-server


# -- S3 ---------------------------------------------------------------------------------------------


def test_s3_fixture_serves_a_bucket(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="a/b", Body=b"hello")
    assert client.get_object(Bucket=s3_bucket, Key="a/b")["Body"].read() == b"hello"
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")


def test_s3_server_starts_and_stops(short_tmp_dir: Path) -> None:
    with S3Server(free_port(), short_tmp_dir / "s3") as server:
        pid = server.pid
        server.client().create_bucket(Bucket="some-bucket")
        assert [b["Name"] for b in server.client().list_buckets()["Buckets"]] == ["some-bucket"]
    assert_gone(pid, server.port)
    server.stop()
    assert (short_tmp_dir / "s3" / "moto.log").exists()


def test_s3_server_on_taken_port_raises(taken_port: int) -> None:
    with pytest.raises(ServerError, match=f"port {taken_port} is already in use"):
        S3Server(taken_port).start()


def test_stop_pid_stops_once_and_is_idempotent() -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert pid_alive(child.pid)
    stop_pid(child.pid, timeout=5)
    child.wait(timeout=5)
    assert not pid_alive(child.pid)
    stop_pid(child.pid)  # already gone: no error
    stop_pid(None)
    stop_pid(2**22 + 12345)  # no such process
    assert child.returncode == -15  # ended by SIGTERM, not SIGKILL
