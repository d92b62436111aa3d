"""The sandbox folder and the components the policy puts in it.

Ports and names come from the policy; everything else lives in the sandbox folder::

    <dir>/policy.yaml           the sandbox's policy (absolute paths), written from a template by ``up``
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
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hadr_backup.errors import UsageError
from hadr_backup.policy.load import expand, load_policy, policy_from_text
from hadr_backup.policy.model import Policy
from hadr_backup.postgres.archive import archive_command_for
from hadr_backup.redis.queuerun import queue_source
from hadr_backup.sandbox import seed, servers
from hadr_backup.sandbox.servers import PostgresCluster, RedisServer, S3Server
from hadr_backup.sandbox.workload import Stack

Progress = Callable[[str], None]
REDIS_SETTINGS: dict[str, dict[str, Any]] = {
    "cache": {"save": "300 1 60 1000", "appendonly": False},
    "queue": {
        "save": "",
        "appendonly": True,
        "aof_timestamp": True,
        # history files stay until `hadr archive redis` has them (it removes them)
        "extra": {"appendfsync": "everysec", "aof-disable-auto-gc": True},
    },
}


DEFAULT_DIR = ".hadr-sandbox"
POLICY_FILE = "policy.yaml"
PORT_VARIABLES = ("HADR_SANDBOX_PG_PORT", "HADR_SANDBOX_CACHE_PORT", "HADR_SANDBOX_QUEUES_PORT", "HADR_SANDBOX_S3_PORT")
SANDBOX_DIR_HELP = (
    "Sandbox folder. Default: the sandbox.dir of --policy / $HADR_POLICY when given, "
    "else $HADR_SANDBOX, else ./.hadr-sandbox."
)
_HEADER = (
    "# The sandbox's policy, written by `hadr sandbox up` (edit it freely; `down --purge` removes it).\n"
    "# Point the other commands at it: export HADR_POLICY={path}\n"
)


def sandbox_policy(policy_path: str | None, sandbox_dir: Path | None, *, write: bool = False) -> tuple[Policy, Path]:
    """The policy and the (absolute) sandbox folder.

    A policy given with ``--policy`` or ``HADR_POLICY`` is used as it is; the folder is then ``sandbox_dir``,
    else the policy's ``sandbox.dir``, else the default. Otherwise the folder is ``sandbox_dir``, else
    ``$HADR_SANDBOX``, else ``./.hadr-sandbox``, and the policy is the folder's ``policy.yaml``: written from
    the template when absent and ``write`` (``sandbox up``, ``demo``), read from the template otherwise.
    """
    if policy_path:
        policy = load_policy(policy_path)
        return policy, Path(sandbox_dir or policy.sandbox_dir or DEFAULT_DIR).absolute()
    folder = Path(sandbox_dir or os.environ.get("HADR_SANDBOX") or DEFAULT_DIR).absolute()
    path = folder / POLICY_FILE
    if path.is_file():
        return load_policy(str(path)), folder
    text = render_policy(folder, path)
    if not write:
        return policy_from_text(text, str(path)), folder
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as handle:  # readable by the server's OS user, which runs archive_command
        handle.write(text)
    return load_policy(str(path)), folder


def render_policy(folder: Path, path: Path) -> str:
    """The template with the folder's absolute path and the ports (``HADR_SANDBOX_*_PORT``) filled in."""
    import yaml

    values = {"HADR_SANDBOX": str(folder), **{k: os.environ[k] for k in PORT_VARIABLES if os.environ.get(k)}}
    template = resources.files("hadr_backup.policy").joinpath("sandbox.yaml").read_text()

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        return expand(node, "the sandbox policy template", values) if isinstance(node, str) else node

    return _HEADER.format(path=shlex.quote(str(path))) + yaml.safe_dump(fill(yaml.safe_load(template)), sort_keys=False)


def export_line(policy: Policy) -> str:
    """The shell line that points the other commands at this policy."""
    return f"export HADR_POLICY={shlex.quote(str(Path(policy.path).absolute()))}"


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
    def queue_source(self) -> Any:
        """The redis source with role queue (BullMQ's)."""
        return queue_source(self.policy, None)

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
            server = RedisServer.attach(
                self.root / "redis" / source.name,
                source.port,
                pid=self.recorded_pid(component),
                **REDIS_SETTINGS[source.role],
            )
            found.append((component, server, source))
        return found

    def s3_server(self) -> tuple[str, S3Server]:
        component = f"s3-{self.bucket_source.name}"
        return component, S3Server.attach(self.bucket_source.port, self.root / "s3", pid=self.recorded_pid(component))

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
        """hadr wal-push as the server runs it (as its OS user), under the policy file this sandbox uses."""
        command = archive_command_for(self.policy.path, self.pg_source.name)
        package_root = Path(__file__).resolve().parents[2]
        if package_root.name == "site-packages":
            return command
        return f"PYTHONPATH={shlex.quote(str(package_root))}; export PYTHONPATH; {command}"  # a source tree

    def open_stack(self) -> Stack:
        import psycopg
        import redis

        roles = {source.role: source.url for source in reversed(self.policy.sources.redis)}
        if set(roles) != {"cache", "queue"}:
            raise UsageError(
                "the sandbox needs a redis source with role cache and one with role queue",
                hint="fix sources.redis in the policy",
            )
        pg = self.pg_source
        return Stack(
            payment=psycopg.connect(pg.dsn_for(seed.PAYMENT_DB), autocommit=True, connect_timeout=10),
            upload=psycopg.connect(pg.dsn_for(seed.UPLOAD_DB), autocommit=True, connect_timeout=10),
            s3=self.s3_client(),
            bucket=self.bucket_source.buckets[0],
            cache=redis.Redis.from_url(roles["cache"], socket_timeout=10),
            queues=redis.Redis.from_url(roles["queue"], socket_timeout=10),
        )
