"""``hadr sandbox up|down|status|load``: a local PostgreSQL, two Redis and an S3 endpoint, seeded.

Each ``run_sandbox_*`` works on the folder described in ``layout`` and returns a result from ``results``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hadr_backup import procs
from hadr_backup.errors import ServerError, UsageError
from hadr_backup.progress import shown_by
from hadr_backup.sandbox import seed
from hadr_backup.sandbox.layout import Progress, Sandbox, export_line
from hadr_backup.sandbox.results import Component, SandboxDown, SandboxLoad, SandboxStatus, SandboxUp
from hadr_backup.sandbox.seed import Problem
from hadr_backup.sandbox.workload import Bundler, run_workload
from hadr_backup.timefmt import rfc3339
from hadr_backup.ui import plural

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
    return SandboxUp(
        dir=sandbox.root,
        policy=policy.path,
        seeded=seeded,
        restored_objects=restored,
        components=components,
        warnings=archive_warnings(),
        export=export_line(policy),
    )


def refuse_if_busy(sandbox: Sandbox) -> None:
    running = sandbox.running_pids()
    if running:
        listed = ", ".join(f"{component} pid {pid}" for component, pid in running.items())
        raise UsageError(
            f"the sandbox in {sandbox.root} is already running ({listed})",
            hint=f"see `hadr sandbox status --dir {sandbox.root}`, "
            f"or stop it with `hadr sandbox down --dir {sandbox.root}`",
        )
    for component, port in sandbox.ports().items():
        if procs.port_open(port):
            raise ServerError(
                f"port {port} (for {component}) is already in use by another process",
                hint=f"stop that process, or give the sandbox other ports in {sandbox.policy.path} "
                f"(a sandbox's first `up` takes them from HADR_SANDBOX_PG_PORT, _CACHE_PORT, "
                f"_QUEUES_PORT and _S3_PORT)",
            )


def prepare_repository_dir(sandbox: Sandbox) -> None:
    """Create a local repository's directory owned by the server's OS user, so the archive_command
    (which runs as that user) can write there; the repository keeps that owner for new files."""
    path = getattr(sandbox.policy.repository, "path", None)
    if path and not Path(path).exists():
        procs.prepare_dir_for_postgres(path)


def prepare_key_and_repository(sandbox: Sandbox) -> None:
    """The sandbox comes ready to back up: its key (readable by the archive_command's OS user) and
    an initialised repository."""
    from hadr_backup.repo.keys import create_key_file
    from hadr_backup.repo.repository import init_repo

    key_file = sandbox.policy.encryption.key_file
    if key_file and not Path(key_file).exists():
        Path(key_file).parent.mkdir(parents=True, exist_ok=True)
        create_key_file(Path(key_file))
        if procs.running_as_root():
            owner = pwd.getpwnam(procs.POSTGRES_OS_USER)
            os.chown(key_file, owner.pw_uid, owner.pw_gid)
    init_repo(sandbox.policy)


def start_postgres(sandbox: Sandbox, started: list[Callable[[], None]]) -> None:
    component, cluster = sandbox.postgres()
    parent = cluster.data_dir.parent.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not procs.postgres_user_can(["test", "-x", str(parent)]):
        raise ServerError(
            f"the postgres OS user cannot enter {parent}",
            hint="put the sandbox where every user can traverse, e.g. --dir /tmp/hadr-sandbox",
        )
    if not cluster.is_initialized:
        sandbox.progress(f"initdb {cluster.data_dir}")
        cluster.init()
    cluster.write_settings(
        {"archive_mode": "on", "archive_timeout": "60", "archive_command": sandbox.archive_command()}
    )
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
    if procs.postgres_user_can([sys.executable, "-c", "pass"]):
        return []
    return [
        f"the postgres OS user cannot run {sys.executable}, so WAL archiving will fail; "
        "make its directories traversable (chmod o+x) or install hadr where every user can run it"
    ]


# -- down -------------------------------------------------------------------------------------------


def run_sandbox_down(
    policy: Any, sandbox_dir: Path, *, purge: bool = False, progress: Progress | None = None
) -> SandboxDown:
    """Stop every component (saving the S3 endpoint's objects), wait for the ports to close."""
    sandbox = Sandbox(Path(sandbox_dir).absolute(), policy, progress or (lambda message: None))
    if purge and sandbox.root.exists() and not sandbox.marker.exists():
        raise UsageError(f"{sandbox.root} has no sandbox.json, so it is not purged", hint="check --dir")
    stopped, saved = stop_components(sandbox, save_objects=not purge)
    forget_stopped(sandbox, stopped)
    if purge and sandbox.root.exists():
        shutil.rmtree(sandbox.root)
    return SandboxDown(dir=sandbox.root, stopped=stopped, purged=purge, saved_objects=saved)


def stop_components(sandbox: Sandbox, *, save_objects: bool) -> tuple[list[str], int]:
    """Stop whatever runs; the components stopped, and how many S3 objects were saved before the endpoint
    stopped (its objects live in memory only)."""
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
        if save_objects:
            sandbox.progress("saving the S3 endpoint's objects")
            saved = seed.save_buckets(sandbox.s3_client(), sandbox.root / "s3" / "objects")
        s3.stop()
        stopped.append(component)
    return stopped, saved


def forget_stopped(sandbox: Sandbox, stopped: list[str]) -> None:
    """Wait for the ports of the stopped components to close, then drop every pid file."""
    ports = sandbox.ports()
    for component in stopped:
        if not procs.wait_port_closed(ports[component], timeout=15):
            raise ServerError(f"port {ports[component]} ({component}) is still open after stopping it")
    for component in ports:
        sandbox.pid_file(component).unlink(missing_ok=True)


# -- status -----------------------------------------------------------------------------------------


def run_sandbox_status(policy: Any, sandbox_dir: Path) -> SandboxStatus:
    """Per component: running, pid, port and counts; the invariants when everything runs."""
    sandbox = Sandbox(Path(sandbox_dir).absolute(), policy)
    components = component_statuses(sandbox)
    seeded = bool(sandbox.read_marker().get("seeded"))
    problems = invariant_problems(sandbox) if seeded and all(c.running for c in components) else None
    return SandboxStatus(dir=sandbox.root, policy=policy.path, seeded=seeded, components=components, problems=problems)


def component_statuses(sandbox: Sandbox) -> list[Component]:
    import psycopg

    component, cluster = sandbox.postgres()

    def pg_counts() -> dict[str, int]:
        pg = sandbox.pg_source
        with (
            psycopg.connect(pg.dsn_for(seed.PAYMENT_DB), connect_timeout=5) as payment,
            psycopg.connect(pg.dsn_for(seed.UPLOAD_DB), connect_timeout=5) as upload,
        ):
            return seed.table_counts(payment, upload)

    found = [
        Component(
            component,
            "postgres",
            cluster.port,
            cluster.is_running,
            cluster.pid,
            _counted(cluster.is_running, pg_counts),
        )
    ]
    for component, server, source in sandbox.redis_servers():
        found.append(
            Component(
                component,
                f"redis ({source.role})",
                server.port,
                bool(server.pid),
                server.pid,
                _counted(bool(server.pid), lambda s=server, source=source: _redis_counts(s.client(), source)),
            )
        )
    component, s3 = sandbox.s3_server()
    buckets = sandbox.bucket_source.buckets
    found.append(
        Component(
            component,
            "s3",
            s3.port,
            bool(s3.pid),
            s3.pid,
            _counted(bool(s3.pid), lambda: seed.bucket_counts(sandbox.s3_client(), buckets)),
        )
    )
    return found


def _redis_counts(client: Any, source: Any) -> dict[str, int]:
    counts = {"keys": client.dbsize()}
    for states in seed.queue_counts(source).values():
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
        return (
            seed.check_ledger(stack.payment)
            + seed.check_data_items(stack.upload, stack.s3, stack.bucket)
            + seed.check_queues(sandbox.queue_source)
        )
    finally:
        stack.close()


# -- load -------------------------------------------------------------------------------------------


def run_sandbox_load(
    policy: Any, sandbox_dir: Path, *, seconds: float, rate: float = 20.0, seed_value: int | None = None, ui: Any = None
) -> SandboxLoad:
    """Run the bundler workload on a running sandbox; Ctrl-C stops it after the operation in flight.
    ``ui``: shows the seconds left and the operations done."""
    import random

    sandbox = Sandbox(Path(sandbox_dir).absolute(), policy)
    if not sandbox.read_marker().get("seeded") or len(sandbox.running_pids()) < len(sandbox.ports()):
        raise ServerError(
            f"the sandbox in {sandbox.root} is not running",
            hint=f"start it with `hadr sandbox up --dir {sandbox.root}`",
        )
    stack = sandbox.open_stack()
    began = time.monotonic()
    phase = f"load on the sandbox in {sandbox.root} at {rate:g} operations/s"
    try:
        bundler = Bundler(stack, random.Random(seed_value))
        with (
            stop_requests() as stop_requested,
            shown_by(ui, phase, total=seconds, unit="seconds", label="load") as shown,
        ):

            def tick() -> None:
                shown.update(
                    min(time.monotonic() - began, seconds), note=plural(bundler.counts["operations"], "operation")
                )

            interrupted = run_workload(bundler, seconds=seconds, rate=rate, should_stop=stop_requested, on_tick=tick)
            tick()
    finally:
        stack.close()
    return SandboxLoad(
        dir=sandbox.root,
        seconds=seconds,
        rate=rate,
        elapsed=time.monotonic() - began,
        interrupted=interrupted,
        counts=dict(bundler.counts),
        problems=invariant_problems(sandbox),
    )


@contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """SIGINT and SIGTERM set a flag instead of raising, so the operation in flight completes."""
    requested: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: requested.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield lambda: bool(requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _now() -> str:
    return rfc3339(time.time())
