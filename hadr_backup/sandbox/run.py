"""``hadr sandbox up|down|status|load``: a local PostgreSQL, two Redis and an S3 endpoint, seeded.

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
import pwd
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hadr_backup.errors import ServerError, UsageError
from hadr_backup.sandbox import seed, servers
from hadr_backup.sandbox.seed import Problem
from hadr_backup.sandbox.servers import PostgresCluster, RedisServer, S3Server
from hadr_backup.sandbox.workload import Bundler, Stack, run_workload

Progress = Callable[[str], None]
REDIS_SETTINGS: dict[str, dict[str, Any]] = {
    "cache": {"save": "300 1 60 1000", "appendonly": False},
    "queue": {"save": "", "appendonly": True, "aof_timestamp": True, "extra": {"appendfsync": "everysec"}},
}


# -- results ----------------------------------------------------------------------------------------


@dataclass
class Component:
    name: str  # postgres-<source>, redis-<source>, s3-<source>
    kind: str
    port: int
    running: bool
    pid: int | None
    counts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _render_components(out: Any, components: list[Component]) -> None:
    rows = [(c.name, "running" if c.running else "stopped", c.pid or "-", c.port) for c in components]
    out.table("", ["component", "state", "pid", "port"], rows)
    for component in components:
        if component.counts:
            out.line(f"{component.name}: " + ", ".join(f"{k} {v}" for k, v in component.counts.items()))


def _render_problems(out: Any, problems: list[Problem] | None) -> None:
    if problems is None:
        out.line("invariants: not checked (the sandbox is not fully running)")
    elif not problems:
        out.line("invariants: ok (ledger, data items, queues)")
    else:
        out.line(f"invariants: {len(problems)} problem(s)")
        for problem in problems[:50]:
            out.line(f"  {problem}")


@dataclass
class SandboxUp:
    dir: Path
    policy: str
    seeded: bool
    restored_objects: int
    components: list[Component]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dir": str(self.dir), "components": [c.to_json() for c in self.components]}

    def render(self, out: Any) -> None:
        what = "seeded a fresh stack" if self.seeded else "existing data kept"
        out.line(f"sandbox up in {self.dir} ({what}; policy {self.policy})")
        _render_components(out, self.components)
        for warning in self.warnings:
            out.line(f"warning: {warning}")


@dataclass
class SandboxDown:
    dir: Path
    stopped: list[str]
    purged: bool
    saved_objects: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dir": str(self.dir)}

    def render(self, out: Any) -> None:
        stopped = f"stopped {', '.join(self.stopped)}" if self.stopped else "nothing was running"
        saved = f" ({self.saved_objects} S3 objects saved)" if self.saved_objects else ""
        kept = "folder removed" if self.purged else f"data kept{saved}"
        out.line(f"sandbox down in {self.dir}: {stopped}; {kept}")


@dataclass
class SandboxStatus:
    dir: Path
    policy: str
    seeded: bool
    components: list[Component]
    problems: list[Problem] | None  # None: not checked

    def to_json(self) -> dict[str, Any]:
        problems = None if self.problems is None else [p.to_json() for p in self.problems]
        return {"dir": str(self.dir), "policy": self.policy, "seeded": self.seeded,
                "running": all(c.running for c in self.components),
                "components": [c.to_json() for c in self.components], "problems": problems}

    def render(self, out: Any) -> None:
        out.line(f"sandbox {self.dir} (policy {self.policy}{'' if self.seeded else ', not seeded'})")
        _render_components(out, self.components)
        _render_problems(out, self.problems)


@dataclass
class SandboxLoad:
    dir: Path
    seconds: float
    rate: float
    elapsed: float
    interrupted: bool
    counts: dict[str, int]
    problems: list[Problem]

    @property
    def exit_code(self) -> int:
        return 3 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dir": str(self.dir), "problems": [p.to_json() for p in self.problems]}

    def render(self, out: Any) -> None:
        how = "interrupted" if self.interrupted else "done"
        out.line(f"load {how} after {self.elapsed:.1f} s (asked {self.seconds:g} s at {self.rate:g} op/s)")
        out.kv(sorted(self.counts.items()))
        _render_problems(out, self.problems)


# -- the folder and its components ------------------------------------------------------------------


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


# -- up ---------------------------------------------------------------------------------------------


def run_sandbox_up(policy: Any, sandbox_dir: Path, progress: Progress | None = None) -> SandboxUp:
    """Start every component detached, seed on the first start; on failure stop what was started."""
    sandbox = Sandbox(Path(sandbox_dir).absolute(), policy, progress or (lambda message: None))
    refuse_if_busy(sandbox)
    sandbox.write_marker(created=sandbox.read_marker().get("created") or _now())
    prepare_repository_dir(sandbox)
    prepare_key_and_repository(sandbox)
    started: list[Callable[[], None]] = []
    try:
        start_postgres(sandbox, started)
        start_redis(sandbox, started)
        restored = start_s3(sandbox, started)
        seeded = seed_if_new(sandbox)
    except BaseException:
        for stop in reversed(started):
            stop()
        raise
    components = component_statuses(sandbox)
    return SandboxUp(dir=sandbox.root, policy=policy.path, seeded=seeded, restored_objects=restored,
                     components=components, warnings=archive_warnings())


def refuse_if_busy(sandbox: Sandbox) -> None:
    running = sandbox.running_pids()
    if running:
        listed = ", ".join(f"{component} pid {pid}" for component, pid in running.items())
        raise UsageError(f"the sandbox in {sandbox.root} is already running ({listed})",
                         hint=f"see `hadr sandbox status --dir {sandbox.root}`, "
                              f"or stop it with `hadr sandbox down --dir {sandbox.root}`")
    for component, port in sandbox.ports().items():
        if servers.port_open(port):
            raise ServerError(f"port {port} (for {component}) is already in use by another process",
                              hint="stop that process, or give the sandbox other ports in the policy "
                                   "(built-in policy: HADR_SANDBOX_PG_PORT, _CACHE_PORT, _QUEUES_PORT, _S3_PORT)")


def prepare_repository_dir(sandbox: Sandbox) -> None:
    """Create a local repository's directory owned by the server's OS user, so the archive_command
    (which runs as that user) can write there; the repository keeps that owner for new files."""
    path = getattr(sandbox.policy.repository, "path", None)
    if path and not Path(path).exists():
        servers.prepare_dir_for_postgres(path)


def prepare_key_and_repository(sandbox: Sandbox) -> None:
    """The sandbox comes ready to back up: its key (readable by the archive_command's OS user) and
    an initialised repository."""
    from hadr_backup.repo.keys import create_key_file
    from hadr_backup.repo.repository import init_repo

    key_file = sandbox.policy.encryption.key_file
    if key_file and not Path(key_file).exists():
        Path(key_file).parent.mkdir(parents=True, exist_ok=True)
        create_key_file(Path(key_file))
        if servers.running_as_root():
            owner = pwd.getpwnam(servers.POSTGRES_OS_USER)
            os.chown(key_file, owner.pw_uid, owner.pw_gid)
    init_repo(sandbox.policy)


def start_postgres(sandbox: Sandbox, started: list[Callable[[], None]]) -> None:
    component, cluster = sandbox.postgres()
    parent = cluster.data_dir.parent.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not servers.postgres_user_can(["test", "-x", str(parent)]):
        raise ServerError(f"the postgres OS user cannot enter {parent}",
                          hint="put the sandbox where every user can traverse, e.g. --dir /tmp/hadr-sandbox")
    if not cluster.is_initialized:
        sandbox.progress(f"initdb {cluster.data_dir}")
        cluster.init()
    cluster.write_settings({"archive_mode": "on", "archive_timeout": "60",
                            "archive_command": sandbox.archive_command()})
    sandbox.progress(f"starting PostgreSQL on port {cluster.port}")
    cluster.start()
    started.append(lambda: cluster.stop("fast"))
    sandbox.record_pid(component, cluster.pid)


def start_redis(sandbox: Sandbox, started: list[Callable[[], None]]) -> None:
    for component, server, source in sandbox.redis_servers():
        sandbox.progress(f"starting redis-server ({source.role}) on port {server.port}")
        server.start(detach=True)
        started.append(server.stop)
        sandbox.record_pid(component, server.pid)


def start_s3(sandbox: Sandbox, started: list[Callable[[], None]]) -> int:
    """Start the S3 endpoint and load back the objects saved by the last ``down``."""
    component, s3 = sandbox.s3_server()
    sandbox.progress(f"starting the S3 endpoint on port {s3.port}")
    s3.start(detach=True)
    started.append(s3.stop)
    sandbox.record_pid(component, s3.pid)
    return seed.load_buckets(sandbox.s3_client(), sandbox.root / "s3" / "objects")


def seed_if_new(sandbox: Sandbox) -> bool:
    if sandbox.read_marker().get("seeded"):
        return False
    sandbox.progress("seeding payment_service, upload_service, the bucket, the cache and the queues")
    with sandbox.postgres()[1].connect() as admin:
        seed.create_databases(admin)
    stack = sandbox.open_stack()
    try:
        for bucket in sandbox.bucket_source.buckets:
            seed.reset_bucket(stack.s3, bucket)
        counts = seed.seed_data(stack)
        stack.cache.save()  # the cache persists by RDB only: keep the seed across a restart
    finally:
        stack.close()
    sandbox.write_marker(seeded=_now(), seed_counts=counts)
    return True


def archive_warnings() -> list[str]:
    if servers.postgres_user_can([sys.executable, "-c", "pass"]):
        return []
    return [f"the postgres OS user cannot run {sys.executable}, so WAL archiving will fail; "
            "make its directories traversable (chmod o+x) or install hadr where every user can run it"]


# -- down -------------------------------------------------------------------------------------------


def run_sandbox_down(policy: Any, sandbox_dir: Path, *, purge: bool = False,
                     progress: Progress | None = None) -> SandboxDown:
    """Stop every component (saving the S3 endpoint's objects), wait for the ports to close."""
    sandbox = Sandbox(Path(sandbox_dir).absolute(), policy, progress or (lambda message: None))
    if purge and sandbox.root.exists() and not sandbox.marker.exists():
        raise UsageError(f"{sandbox.root} has no sandbox.json, so it is not purged", hint="check --dir")
    stopped, saved = [], 0
    component, cluster = sandbox.postgres()
    if cluster.is_running:
        sandbox.progress(f"stopping PostgreSQL on port {cluster.port}")
        cluster.stop("fast")
        stopped.append(component)
    for component, server, _ in sandbox.redis_servers():
        if server.pid:
            server.stop()
            stopped.append(component)
    component, s3 = sandbox.s3_server()
    if s3.pid:
        if not purge:
            sandbox.progress("saving the S3 endpoint's objects")
            saved = seed.save_buckets(sandbox.s3_client(), sandbox.root / "s3" / "objects")
        s3.stop()
        stopped.append(component)
    ports = sandbox.ports()
    for component in stopped:
        if not servers.wait_port_closed(ports[component], timeout=15):
            raise ServerError(f"port {ports[component]} ({component}) is still open after stopping it")
    for component in ports:
        sandbox.pid_file(component).unlink(missing_ok=True)
    if purge and sandbox.root.exists():
        shutil.rmtree(sandbox.root)
    return SandboxDown(dir=sandbox.root, stopped=stopped, purged=purge, saved_objects=saved)


# -- status -----------------------------------------------------------------------------------------


def run_sandbox_status(policy: Any, sandbox_dir: Path) -> SandboxStatus:
    """Per component: running, pid, port and counts; the invariants when everything runs."""
    sandbox = Sandbox(Path(sandbox_dir).absolute(), policy)
    components = component_statuses(sandbox)
    seeded = bool(sandbox.read_marker().get("seeded"))
    problems = invariant_problems(sandbox) if seeded and all(c.running for c in components) else None
    return SandboxStatus(dir=sandbox.root, policy=policy.path, seeded=seeded, components=components,
                         problems=problems)


def component_statuses(sandbox: Sandbox) -> list[Component]:
    import psycopg

    component, cluster = sandbox.postgres()

    def pg_counts() -> dict[str, int]:
        pg = sandbox.pg_source
        with psycopg.connect(pg.dsn_for(seed.PAYMENT_DB), connect_timeout=5) as payment, \
                psycopg.connect(pg.dsn_for(seed.UPLOAD_DB), connect_timeout=5) as upload:
            return seed.table_counts(payment, upload)

    found = [Component(component, "postgres", cluster.port, cluster.is_running, cluster.pid,
                       _counted(cluster.is_running, pg_counts))]
    for component, server, source in sandbox.redis_servers():
        found.append(Component(component, f"redis ({source.role})", server.port, bool(server.pid),
                               server.pid, _counted(bool(server.pid), lambda s=server: _redis_counts(s.client()))))
    component, s3 = sandbox.s3_server()
    buckets = sandbox.bucket_source.buckets
    found.append(Component(component, "s3", s3.port, bool(s3.pid), s3.pid,
                           _counted(bool(s3.pid), lambda: seed.bucket_counts(sandbox.s3_client(), buckets))))
    return found


def _redis_counts(client: Any) -> dict[str, int]:
    counts = {"keys": client.dbsize()}
    for states in seed.queue_counts(client).values():
        for state, number in states.items():
            counts[f"jobs.{state}"] = counts.get(f"jobs.{state}", 0) + number
    return counts


def _counted(running: bool, count: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Counts of a running component; a component that cannot be counted says why instead."""
    if not running:
        return {}
    try:
        return count()
    except Exception as error:  # status reports, it does not fail
        return {"error": str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}


def invariant_problems(sandbox: Sandbox) -> list[Problem]:
    stack = sandbox.open_stack()
    try:
        return (seed.check_ledger(stack.payment) + seed.check_data_items(stack.upload, stack.s3, stack.bucket)
                + seed.check_queues(stack.queues))
    finally:
        stack.close()


# -- load -------------------------------------------------------------------------------------------


def run_sandbox_load(policy: Any, sandbox_dir: Path, *, seconds: float, rate: float = 20.0,
                     seed_value: int | None = None) -> SandboxLoad:
    """Run the bundler workload on a running sandbox; Ctrl-C stops it after the operation in flight."""
    import random

    sandbox = Sandbox(Path(sandbox_dir).absolute(), policy)
    if not sandbox.read_marker().get("seeded") or len(sandbox.running_pids()) < len(sandbox.ports()):
        raise ServerError(f"the sandbox in {sandbox.root} is not running",
                          hint=f"start it with `hadr sandbox up --dir {sandbox.root}`")
    stack = sandbox.open_stack()
    began = time.monotonic()
    try:
        bundler = Bundler(stack, random.Random(seed_value))
        with stop_requests() as stop_requested:
            interrupted = run_workload(bundler, seconds=seconds, rate=rate, should_stop=stop_requested)
    finally:
        stack.close()
    return SandboxLoad(dir=sandbox.root, seconds=seconds, rate=rate, elapsed=time.monotonic() - began,
                       interrupted=interrupted, counts=dict(bundler.counts),
                       problems=invariant_problems(sandbox))


@contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """SIGINT and SIGTERM set a flag instead of raising, so the operation in flight completes."""
    requested: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: requested.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
