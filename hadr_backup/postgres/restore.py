"""``hadr restore pg``: a base backup and archived WAL brought back to a recovery target.

    check DIR → select a whole backup → prove the WAL reaches the target → make DIR ready
    → extract safely → write the recovery configuration → (--start) start and wait until recovery ends

Nothing is written until the proof holds; a target outside the restorable window exits 2 with the
window printed. DIR is refused when it is, holds or lies inside what must be kept (``restoredir``);
with --force its old contents are moved aside, not deleted. A failure while writing names the object
being read and puts DIR back as it was. The repository is opened read-only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hadr_backup.errors import HadrError
from hadr_backup.fsutil import durable_write
from hadr_backup.policy.model import Policy, PostgresSource
from hadr_backup.postgres import recovery, wal
from hadr_backup.postgres.prefetch import PREFETCH_DIR
from hadr_backup.postgres.restoredir import DISCARDED, MOVED, Workspace, naming, refuse_unsafe
from hadr_backup.postgres.restorehints import next_steps
from hadr_backup.postgres.restoreplan import RestorePlan, plan_restore
from hadr_backup.postgres.targets import TIME, RecoveryTarget, recovery_settings
from hadr_backup.postgres.tarsafe import ExtractStats, SafeExtractor
from hadr_backup.procs import free_port
from hadr_backup.progress import Progress, shown_by, silent
from hadr_backup.repo.repository import Repository, open_repo
from hadr_backup.timefmt import format_time, human_size, rfc3339
from hadr_backup.ui import plural

STAGE_LIMIT = 1 << 30  # bytes of WAL staged in pg_wal before recovery starts; the rest is fetched


@dataclass
class RestoreOptions:
    to: Path
    target: RecoveryTarget
    source: str | None = None
    timeline: int | None = None
    backup_id: str | None = None
    action: str = "pause"
    port: int | None = None
    start: bool = False
    force: bool = False  # a non-empty DIR: its contents are moved aside to <DIR>.hadr-old-<UTC stamp>
    discard: bool = False  # with force: deleted instead
    socket_dir: str | None = None
    verify: bool = False  # pg_verifybackup against the backup's manifest after extraction
    stage_wal: bool = True  # copy the WAL the plan needs into pg_wal (up to STAGE_LIMIT bytes)
    timeout: float = 3600.0  # how long --start waits for recovery to end


@dataclass
class RestoreResult:
    source: str
    directory: str
    plan: RestorePlan
    files: int
    bytes: int
    port: int | None
    started: bool
    state: str  # configured | paused | promoted | shut down
    reached_time: float | None = None
    reached_lsn: str | None = None
    reached_timeline: int | None = None
    stop_line: str | None = None
    seconds: float = 0.0
    extract_seconds: float = 0.0
    settings: dict[str, str] = field(default_factory=dict)
    previous: str | None = None  # what became of DIR's old contents: moved aside | deleted (--force)
    previous_path: str | None = None  # where they are when moved aside
    verified: bool = False  # --verify: pg_verifybackup found every file as the backup's manifest has it
    bin_dir: str = ""  # the PostgreSQL programs, for the command lines the output suggests
    conninfo: str | None = None  # how to connect to the restored server (no password), once it has a port

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "directory": self.directory,
            "previous_contents": self.previous,
            "previous_path": self.previous_path,
            **self.plan.to_json(),
            "files": self.files,
            "bytes": self.bytes,
            "port": self.port,
            "started": self.started,
            "state": self.state,
            "reached_time": rfc3339(self.reached_time),
            "reached_lsn": self.reached_lsn,
            "reached_timeline": self.reached_timeline,
            "postgres_said": self.stop_line,
            "seconds": round(self.seconds, 3),
            "extract_seconds": round(self.extract_seconds, 3),
            "verified": self.verified,
            "settings": self.settings,
        }

    def render(self, out) -> None:
        plan, stop = self.plan, self.plan.stop_record
        rows = [
            ("target", plan.target.describe() + (" (UTC)" if plan.target.kind == TIME else "")),
            (
                "backup",
                f"{plan.backup.id} (timeline {plan.backup.timeline}, finished {format_time(plan.backup.stop_time)})",
            ),
            ("timeline", plan.timeline),
            (
                "WAL",
                f"{plan.segments[0]} .. {plan.segments[-1]} ({plural(len(plan.segments), 'segment')}, all archived)",
            ),
        ]
        if stop is not None and stop.time is not None:
            rows.append(("stops at", f"{stop.kind} of transaction {stop.xid} at {format_time(stop.time)}"))
        rows += [("note", note) for note in plan.notes]
        rows.append(("directory", f"{self.directory} ({plural(self.files, 'file')}, {human_size(self.bytes)})"))
        if self.previous:
            where = f" to {self.previous_path}" if self.previous_path else " (--discard)"
            rows.append(("previous contents", self.previous + where))
        if self.verified:
            rows.append(("verified", "passed: pg_verifybackup found every file as the backup's manifest lists it"))
        rows.append(("state", self.state if self.started else "configured, not started"))
        if self.started:
            reached = (
                f"{format_time(self.reached_time)} (the last transaction replayed)"
                if self.reached_time is not None
                else "not known (no transaction replayed, or no query answered)"
            )
            rows += [("port", self.port), ("reached", reached), ("LSN", self.reached_lsn or "-")]
            if self.stop_line:
                rows.append(("PostgreSQL", self.stop_line))
        rows += next_steps(
            self.directory,
            self.bin_dir,
            self.state,
            self.settings.get("recovery_target_action", ""),
            self.conninfo,
            self.port,
        )
        rows.append(("took", f"{self.seconds:.1f} s (extract {self.extract_seconds:.1f} s)"))
        out.kv(rows)


def run_restore_pg(policy: Policy, opts: RestoreOptions, ui=None) -> RestoreResult:
    """Restore a PostgreSQL source into ``opts.to`` at ``opts.target`` (``ui``: shows progress)."""
    began = time.monotonic()
    source = policy.sources.postgres_named(opts.source)
    to = Path(opts.to).absolute()
    # 1. DIR is not, holds nothing of and lies inside nothing that must be kept; non-empty only with --force
    refuse_unsafe(policy, to, force=opts.force, discard=opts.discard)
    with open_repo(policy) as repo, tempfile.TemporaryDirectory(prefix="hadr-wal-") as wal_cache:
        # 2. choose a whole backup and prove the archive reaches the target: nothing is written before this
        plan = plan_restore(
            repo, source, opts.target, timeline=opts.timeline, backup_id=opts.backup_id, wal_cache=Path(wal_cache)
        )
        # 3. DIR made ready: created, or emptied, or (--force) its old contents moved aside
        workspace = Workspace.prepare(to, force=opts.force, discard=opts.discard)
        # 4. files, WAL and recovery configuration; on any failure DIR is put back as it was
        with workspace.put_back_on_failure(f"restoring backup {plan.backup.id} into {to}"):
            result = write_restore(repo, policy, source, plan, opts, workspace, Path(wal_cache), ui)
    # 5. start it and wait until recovery ends at the target (a failure leaves DIR, and its log, to look at)
    if opts.start:
        try:
            reach(result, to, source, result.port, opts.timeout, ui)
        except HadrError as error:
            if workspace.aside:
                error.amend(hint=f"the previous contents of {to} are in {workspace.aside}")
            raise
    result.seconds = time.monotonic() - began
    return result


def write_restore(
    repo: Repository,
    policy: Policy,
    source: PostgresSource,
    plan: RestorePlan,
    opts: RestoreOptions,
    workspace: Workspace,
    wal_cache: Path,
    ui=None,
) -> RestoreResult:
    """The base backup extracted (the WAL staged meanwhile), checked with --verify, configured for recovery."""
    to, owner = workspace.path, workspace.owner
    extracted = time.monotonic()
    tar_bytes = sum(o.raw_size for o in plan.backup.entry.objects if o.key in plan.backup.meta.tar_objects)
    with shown_by(
        ui, f"restore {to}: extracting backup {plan.backup.id}", total=tar_bytes, label="extract"
    ) as progress:
        stats, staged = extract_and_stage(repo, plan, to, owner, wal_cache, stage=opts.stage_wal, progress=progress)
    extract_seconds = time.monotonic() - extracted
    if opts.verify:
        verify_files(to, source)
    # recovery.signal, one recovery_target_*, restore_command, archive_mode = off, the port
    port = opts.port or (free_port() if opts.start else None)
    settings = restore_settings(policy, source, plan, opts, port, staged=bool(staged))
    recovery.write_recovery_config(
        to, settings, owner, f"hadr restore of backup {plan.backup.id} to {plan.target.describe()}"
    )
    return RestoreResult(
        source.name,
        str(to),
        plan,
        stats.files,
        stats.bytes,
        port,
        opts.start,
        "configured",
        extract_seconds=extract_seconds,
        settings=settings,
        verified=opts.verify,
        bin_dir=source.bin_dir,
        conninfo=_conninfo(source, port, shown=True) if port else None,
        previous={MOVED: "moved aside", DISCARDED: "deleted"}.get(workspace.before),
        previous_path=str(workspace.aside) if workspace.aside else None,
    )


def extract_and_stage(
    repo: Repository,
    plan: RestorePlan,
    to: Path,
    owner: tuple[int, int] | None,
    wal_cache: Path,
    *,
    stage: bool,
    progress: Progress | None = None,
) -> tuple[ExtractStats, list[str]]:
    """The base backup extracted and synced to disk; meanwhile (``stage``) the WAL the proof found is
    staged in pg_wal, so that replay needs no fetch per segment. A failed extraction stops the staging."""
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="hadr-stage") as pool:
        staging = pool.submit(stage_wal, repo, plan, to, owner, wal_cache, stop) if stage else None
        try:
            stats = extract_backup(repo, plan, to, owner, progress)
        except BaseException:
            stop.set()
            raise
        return stats, staging.result() if staging else []


def extract_backup(
    repo: Repository, plan: RestorePlan, to: Path, owner: tuple[int, int] | None, progress: Progress | None = None
) -> ExtractStats:
    """The backup's tar objects extracted safely; an error names the object being read."""
    entry = plan.backup.entry
    sha = {o.key: o.sha256 for o in entry.objects}
    reading = [""]
    extractor = SafeExtractor(to, owner=owner, durable=True)
    progress = progress or silent()
    done = [0]  # plaintext bytes read so far

    def chunks():
        for key in plan.backup.meta.tar_objects:
            reading[0] = key
            for piece in repo.read_object(key, sha256=sha.get(key)):
                done[0] += len(piece)
                progress.update(done[0], note=plural(extractor.stats.files, "file"))
                yield piece

    with naming(lambda: f"restoring backup {entry.id}: {reading[0]}"):
        stats = extractor.extract(chunks())
    progress.update(done[0], note=plural(stats.files, "file"))
    (to / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
    if owner:
        for path in (to / "pg_wal", to / "pg_wal" / "archive_status"):
            os.chown(path, *owner)
    return stats


def stage_wal(
    repo: Repository,
    plan: RestorePlan,
    to: Path,
    owner: tuple[int, int] | None,
    cache: Path,
    stop: threading.Event | None = None,
) -> list[str]:
    """Copy the segments recovery will replay into pg_wal, verified against their SHA-256 (those the
    proof already fetched and verified come from ``cache``), until ``stop`` is set.

    restore_command still answers for everything else (history files, anything not staged); for a
    staged segment it reports "not archived", and PostgreSQL then reads the copy in pg_wal."""
    from hadr_backup.postgres.waldecode import copy_archived

    names = plan.segments[: max(STAGE_LIMIT // plan.backup.meta.wal_segment_size, 1)]
    pg_wal = to / "pg_wal"
    pg_wal.mkdir(mode=0o700, exist_ok=True)  # the tar may not have reached pg_wal/ yet
    for index, name in enumerate(names):
        if stop is not None and stop.is_set():
            return names[:index]
        found = plan.archived.find(name) if plan.archived else None
        with naming(f"restoring backup {plan.backup.id}: {found.key if found else 'WAL segment ' + name}"):
            if (cache / name).exists():
                _copy_durably(cache / name, pg_wal / name, owner)
            else:
                copy_archived(repo, plan.archived, name, pg_wal / name, durable=True, owner=owner)
    return names


def _copy_durably(source: Path, dest: Path, owner: tuple[int, int] | None) -> None:
    with open(source, "rb") as reader:
        durable_write(dest, iter(partial(reader.read, 1 << 20), b""), mode=None, owner=owner)


def verify_files(to: Path, source: PostgresSource) -> None:
    """pg_verifybackup -n: every file against the backup's own manifest (WAL is checked by replay)."""
    import subprocess

    done = subprocess.run(
        [os.path.join(source.bin_dir, "pg_verifybackup"), "-n", "-q", str(to)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise recovery.RecoveryFailed(f"pg_verifybackup found problems in {to}:\n{done.stderr.strip()}")


def restore_settings(
    policy: Policy,
    source: PostgresSource,
    plan: RestorePlan,
    opts: RestoreOptions,
    port: int | None,
    *,
    staged: bool = False,
) -> dict[str, str]:
    settings = recovery_settings(plan.target, plan.timeline, opts.action)
    command = recovery.restore_command(policy, source.name)
    # a staged segment is read from pg_wal, and timeline 1 never has a history file: the archive is
    # asked only for the rest
    skip = 'test -f "pg_wal/%f" && exit 1; ' if staged else ""
    settings["restore_command"] = f'{skip}test "%f" = 00000001.history && exit 1; {command}'
    settings["archive_mode"] = "off"
    if port:
        settings["port"] = str(port)
    if opts.socket_dir is not None:
        settings["unix_socket_directories"] = opts.socket_dir
    return settings


def _conninfo(source: PostgresSource, port: int | None, *, shown: bool = False) -> str:
    """How hadr reaches the restored server (``shown``: as the output tells the user, without a password)."""
    conninfo = {**source.conninfo, "host": "127.0.0.1", "port": str(port or source.port), "dbname": "postgres"}
    return " ".join(f"{k}={v}" for k, v in conninfo.items() if not (shown and k == "password"))


def reach(result: RestoreResult, to: Path, source: PostgresSource, port: int | None, timeout: float, ui=None) -> None:
    log = recovery.start_server(to, source.bin_dir)
    plan = result.plan
    segment_size = plan.backup.meta.wal_segment_size
    first = plan.backup.start_lsn // segment_size
    with shown_by(
        ui,
        f"restore {to}: replaying WAL to {plan.target.describe()}",
        total=len(plan.segments),
        unit="segments",
        label="replay",
    ) as progress:

        def replayed(lsn: str) -> None:
            progress.update(min(max(wal.parse_lsn(lsn) // segment_size - first, 0), len(plan.segments)))

        reached = recovery.wait_for_recovery(to, _conninfo(source, port), log, timeout, on_replay=replayed)
        progress.update(len(plan.segments))  # the target is reached: what it needed is replayed
    result.state, result.reached_time, result.reached_lsn = reached.state, reached.time, reached.lsn
    result.reached_timeline = reached.timeline or result.plan.timeline
    result.stop_line = reached.log_line
    if reached.state != "paused":  # recovery is over: segments fetched ahead are of no further use
        shutil.rmtree(to / "pg_wal" / PREFETCH_DIR, ignore_errors=True)
