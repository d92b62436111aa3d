"""Shared fixtures: an isolated environment, and real servers on free ports that always stop.

Directories a PostgreSQL server must reach are made under /tmp with short names (pytest's own
``tmp_path`` lives in a 0700 directory the ``postgres`` OS user cannot enter, and a unix socket path
is limited to 107 bytes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hadr_backup.errors import ServerError
from hadr_backup.procs import free_port, prepare_dir_for_postgres
from hadr_backup.sandbox.servers import PostgresCluster, RedisServer, S3Server

SERVER_FIXTURES = {"s3_server", "s3_bucket", "pg_cluster", "pg_cluster_factory", "redis_server", "redis_factory"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers (PostgreSQL, Redis, an S3 endpoint)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/integration, or using a server fixture, are integration tests."""
    for item in items:
        in_integration = "integration" in Path(str(item.fspath)).parts
        if in_integration or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HADR_* setting leaks into a test, and no real cloud credentials are ever visible."""
    for name in list(os.environ):
        if name.startswith(("HADR_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _start_on_free_port(server: Any, start: Callable[[], None], attempts: int = 3) -> None:
    """Start ``server``; if another process took its port meanwhile, retry on a new free port."""
    for attempt in range(attempts):
        try:
            start()
            return
        except ServerError as error:
            if "already in use" not in error.message or attempt == attempts - 1:
                raise
            server.port = free_port()


def _postgres_dir(prefix: str) -> Path:
    return prepare_dir_for_postgres(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture
def short_tmp_dir() -> Iterator[Path]:
    """A fresh directory with a short path under /tmp, owned by postgres when root; removed after."""
    path = _postgres_dir("hadr-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmp_repo_dir() -> Iterator[Path]:
    """A directory for a repository that an archive_command running as postgres can write into."""
    path = _postgres_dir("hadr-repo-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- S3 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    log_dir = Path(tempfile.mkdtemp(prefix="hadr-s3-", dir="/tmp"))
    server = S3Server(free_port(), log_dir)
    _start_on_free_port(server, server.start)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, uniquely named, empty bucket on the session's S3 endpoint."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


# -- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture
def pg_cluster_factory() -> Iterator[Callable[..., PostgresCluster]]:
    """``factory(settings={...}, checksums=True)`` -> a started cluster in its own dir; all stop at teardown."""
    made: list[tuple[PostgresCluster, Path]] = []

    def factory(settings: dict[str, Any] | None = None, **kwargs: Any) -> PostgresCluster:
        base = _postgres_dir("hadr-pg-")
        cluster = PostgresCluster(base, free_port(), settings=settings, **kwargs)
        made.append((cluster, base))
        cluster.init()

        def start() -> None:
            cluster.write_settings({})  # picks up a changed port
            cluster.start()

        _start_on_free_port(cluster, start)
        return cluster

    try:
        yield factory
    finally:
        for cluster, base in reversed(made):
            try:
                cluster.stop("immediate")
            finally:
                shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_cluster(pg_cluster_factory: Callable[..., PostgresCluster]) -> PostgresCluster:
    return pg_cluster_factory()


# -- Redis ------------------------------------------------------------------------------------------


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """``factory(appendonly=False, aof_timestamp=False, save="", extra={})`` -> a started redis-server."""
    made: list[tuple[RedisServer, Path]] = []

    def factory(**kwargs: Any) -> RedisServer:
        base = Path(tempfile.mkdtemp(prefix="hadr-redis-", dir="/tmp"))
        server = RedisServer(base, free_port(), **kwargs)
        made.append((server, base))
        _start_on_free_port(server, server.start)
        return server

    try:
        yield factory
    finally:
        for server, base in reversed(made):
            try:
                server.stop()
            finally:
                shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory()
