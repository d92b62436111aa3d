"""The sandbox folder and the components the policy puts in it.

Ports and names come from the policy; everything else lives in the sandbox folder::

    <dir>/sandbox.json          marker: when created and seeded (``down --purge`` removes only such a folder)
    <dir>/pg/data, pg/*.log     PostgreSQL (unless the policy puts data_dir elsewhere)
    <dir>/redis/<name>/         one redis-server per policy source, with its log
    <dir>/s3/moto.log           the S3 endpoint; while it is down, its objects are kept in <dir>/s3/objects
    <dir>/run/<component>.pid   pids of the detached server processes
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.errors import UsageError
from hadr_backup.sandbox import seed, servers
from hadr_backup.sandbox.servers import PostgresCluster, RedisServer, S3Server
from hadr_backup.sandbox.workload import Stack

Progress = Callable[[str], None]
REDIS_SETTINGS: dict[str, dict[str, Any]] = {
    "cache": {"save": "300 1 60 1000", "appendonly": False},
    "queue": {"save": "", "appendonly": True, "aof_timestamp": True, "extra": {"appendfsync": "everysec"}},
}


def sandbox_policy(load_policy: Callable[[], Any], sandbox_dir: Path | None) -> tuple[Any, Path]:
    """The policy and the sandbox folder: ``sandbox_dir`` if given, else the policy's, else the default.

    The built-in policy reads its paths from ``$HADR_SANDBOX``, so that is set to the folder first.
    """
    if sandbox_dir is not None:
        os.environ["HADR_SANDBOX"] = str(Path(sandbox_dir).absolute())
    policy = load_policy()
    folder = sandbox_dir or policy.sandbox_dir or Path(os.environ.get("HADR_SANDBOX") or ".hadr-sandbox")
    os.environ["HADR_SANDBOX"] = str(Path(folder).absolute())
    return policy, Path(folder).absolute()


@dataclass
class Sandbox:
    root: Path
    policy: Any
    progress: Progress = field(default=lambda message: None)

    @property
    def pg_source(self) -> Any:
        return self.policy.sources.postgres_named(None)

    @property
    def bucket_source(self) -> Any:
        return self.policy.sources.buckets_named(None)

    @property
    def marker(self) -> Path:
        return self.root / "sandbox.json"

    def read_marker(self) -> dict[str, Any]:
        try:
            return json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}

    def write_marker(self, **values: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(json.dumps({**self.read_marker(), **values}, indent=2) + "\n")

    def pid_file(self, component: str) -> Path:
        return self.root / "run" / f"{component}.pid"

    def recorded_pid(self, component: str) -> int | None:
        try:
            return int(self.pid_file(component).read_text().strip())
        except (OSError, ValueError):
            return None

    def record_pid(self, component: str, pid: int | None) -> None:
        self.pid_file(component).parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(component).write_text(f"{pid}\n")

    def postgres(self) -> tuple[str, PostgresCluster]:
        source = self.pg_source
        data_dir = Path(source.data_dir) if source.data_dir else self.root / "pg" / "data"
        cluster = PostgresCluster(data_dir.parent, source.port, data_dir=data_dir, bin_dir=source.bin_dir)
        return f"postgres-{source.name}", cluster

    def redis_servers(self) -> list[tuple[str, RedisServer, Any]]:
        found = []
        for source in self.policy.sources.redis:
            component = f"redis-{source.name}"
            server = RedisServer.attach(self.root / "redis" / source.name, source.port,
                                        pid=self.recorded_pid(component), **REDIS_SETTINGS[source.role])
            found.append((component, server, source))
        return found

    def s3_server(self) -> tuple[str, S3Server]:
        component = f"s3-{self.bucket_source.name}"
        return component, S3Server.attach(self.bucket_source.port, self.root / "s3",
                                          pid=self.recorded_pid(component))

    def ports(self) -> dict[str, int]:
        component, cluster = self.postgres()
        ports = {component: cluster.port}
        ports.update({component: server.port for component, server, _ in self.redis_servers()})
        component, s3 = self.s3_server()
        return {**ports, component: s3.port}

    def running_pids(self) -> dict[str, int]:
        component, cluster = self.postgres()
        pids = {component: cluster.pid}
        pids.update({component: server.pid for component, server, _ in self.redis_servers()})
        component, s3 = self.s3_server()
        pids[component] = s3.pid
        return {component: pid for component, pid in pids.items() if pid}

    def s3_client(self) -> Any:
        source = self.bucket_source
        return servers.s3_client(source.endpoint, source.access_key, source.secret_key, source.region)

    def archive_command(self) -> str:
        """hadr wal-push as the server runs it (as its OS user), under the policy this sandbox uses."""
        from hadr_backup.policy.load import BUILTIN

        env = {k: v for k, v in os.environ.items() if k.startswith("HADR_SANDBOX_")}
        env["HADR_SANDBOX"] = str(self.root)
        argv = [sys.executable, "-m", "hadr_backup"]
        if self.policy.path != BUILTIN:
            env["HADR_POLICY"] = str(Path(self.policy.path).absolute())
            argv += ["--policy", env["HADR_POLICY"]]
        package_root = Path(__file__).resolve().parents[2]
        if package_root.name != "site-packages":  # running from a source tree: let the server find it
            env["PYTHONPATH"] = str(package_root)
        assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(env.items()))
        return f"env {assignments} {shlex.join(argv)} wal-push %p"

    def open_stack(self) -> Stack:
        import psycopg
        import redis

        roles = {source.role: source.url for source in reversed(self.policy.sources.redis)}
        if set(roles) != {"cache", "queue"}:
            raise UsageError("the sandbox needs a redis source with role cache and one with role queue",
                             hint="fix sources.redis in the policy")
        pg = self.pg_source
        return Stack(
            payment=psycopg.connect(pg.dsn_for(seed.PAYMENT_DB), autocommit=True, connect_timeout=10),
            upload=psycopg.connect(pg.dsn_for(seed.UPLOAD_DB), autocommit=True, connect_timeout=10),
            s3=self.s3_client(), bucket=self.bucket_source.buckets[0],
            cache=redis.Redis.from_url(roles["cache"], socket_timeout=10),
            queues=redis.Redis.from_url(roles["queue"], socket_timeout=10))

