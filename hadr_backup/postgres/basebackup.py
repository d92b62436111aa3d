"""``hadr backup pg``: a base backup streamed from pg_basebackup into the repository.

pg_basebackup writes one tar stream (``-Ft -D -``: the data directory, then ``backup_manifest``) that
flows through the pipeline (zstd on two threads, AES-GCM, SHA-256) straight into the repository;
nothing touches local disk. ``-X none``: the WAL that makes the copy consistent comes from the
archive, so the backup is marked complete only once every segment from its start to its stop LSN is
stored in the repository. A run that dies at any point leaves an entry that never reads complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from hadr_backup.errors import HadrError
from hadr_backup.policy.model import Policy, PostgresSource
from hadr_backup.postgres import KIND, wal
from hadr_backup.postgres.archive import stored_versions
from hadr_backup.postgres.backupmeta import PgBackupMeta
from hadr_backup.postgres.server import (
    ServerFacts,
    archiver_hint,
    archiver_state,
    check_archive_identity,
    check_backupable,
    connect,
    databases_size,
    display_text,
    inspect_server,
)
from hadr_backup.postgres.tarstream import Member, TarScanner
from hadr_backup.progress import Progress, shown_by, silent
from hadr_backup.repo import layout
from hadr_backup.repo.repository import Repository, open_repo
from hadr_backup.timefmt import format_time, human_size, rfc3339
from hadr_backup.ui import plural

READ_SIZE = 1 << 20


class BackupFailed(HadrError):
    """The base backup did not complete."""


@dataclass
class BackupResult:
    backup_id: str
    source: str
    state: str
    timeline: int
    start_lsn: str
    stop_lsn: str
    start_wal: str
    stop_wal: str
    start_time: float
    stop_time: float
    raw_size: int
    stored_size: int
    files: int
    seconds: float
    databases: list[str]
    checksum_failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    system_identifier: str | None = None  # of the cluster backed up

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "start_time": rfc3339(self.start_time), "stop_time": rfc3339(self.stop_time)}

    def render(self, out) -> None:
        rate = self.raw_size / self.seconds / 2**20 if self.seconds else 0.0
        out.kv(
            [
                ("backup", self.backup_id),
                ("source", self.source),
                ("state", self.state),
                ("timeline", self.timeline),
                ("LSN", f"{self.start_lsn} .. {self.stop_lsn}"),
                ("WAL", f"{self.start_wal} .. {self.stop_wal} (archived)"),
                ("time", f"{format_time(self.start_time)} .. {format_time(self.stop_time)}"),
                (
                    "size",
                    f"{self.raw_size / 2**20:.1f} MiB in {plural(self.files, 'file')}, "
                    f"stored {self.stored_size / 2**20:.1f} MiB",
                ),
                ("took", f"{self.seconds:.1f} s ({rate:.0f} MiB/s)"),
                ("databases", ", ".join(map(display_text, self.databases))),
            ]
        )
        for failure in self.checksum_failures:
            out.line(f"warning: page checksum failure: {failure}")
        for warning in self.warnings:
            out.line(f"warning: {warning}")


def run_backup_pg(policy: Policy, source_name: str | None = None, ui=None) -> BackupResult:
    """Take one base backup of a PostgreSQL source into the repository."""
    source = policy.sources.postgres_named(source_name)
    began = time.monotonic()
    # 1. learn about the server and refuse what cannot make a usable backup
    facts = inspect_server(source)
    check_backupable(source, facts)
    with open_repo(policy, write=True) as repo:
        check_archive_identity(repo, source, facts)
        # 2. record the backup as running before any data is stored
        entry = repo.begin_backup(
            KIND, source.name, {"system_identifier": facts.system_identifier, "pg_version_num": facts.version_num}
        )
        with repo.recording(entry):
            # 3. stream the tar through the pipeline into the repository (the databases' size: the ETA)
            with shown_by(
                ui,
                f"backup {entry.id}: pg_basebackup of {source.name} (PostgreSQL {facts.version})",
                total=databases_size(source),
                estimate=True,
                label="backup",
            ) as progress:
                streamed = stream_base_backup(repo, entry.id, source, facts.wal_segment_size, progress)
            # 4. wait until the WAL that makes it consistent is archived
            _say(ui, f"backup {entry.id}: waiting for WAL {streamed.start_wal} .. {streamed.stop_wal}")
            wait_for_wal(repo, source, streamed)
            # 5. only now is it restorable
            meta = backup_meta(facts, streamed)
            repo.finish_backup(
                entry,
                streamed.objects,
                meta,
                consistent_at=streamed.stop_time,
                needs=consistency_wal(repo, source.name, streamed),
            )
        return _result(entry, streamed, facts, time.monotonic() - began, repo.warnings)


def _say(ui, message: str) -> None:
    if ui is not None:
        ui.info(message)


def backup_prefix(source: str, backup_id: str) -> str:
    return layout.backup_prefix(KIND, source, backup_id)


# -- streaming -------------------------------------------------------------------------------------


@dataclass
class Streamed:
    """What the tar stream told us, plus what was stored."""

    objects: list
    label: str
    manifest: dict
    timeline: int
    start_lsn: int
    stop_lsn: int
    start_time: float
    stop_time: float
    segment_size: int
    files: int
    raw_size: int
    checksum_failures: list[str]

    @property
    def start_wal(self) -> str:
        return wal.segment_name(self.timeline, self.start_lsn, self.segment_size)

    @property
    def stop_wal(self) -> str:
        return wal.segment_name(self.timeline, max(self.stop_lsn - 1, self.start_lsn), self.segment_size)


def pg_basebackup_argv(source: PostgresSource, label: str) -> list[str]:
    return [
        os.path.join(source.bin_dir, "pg_basebackup"),
        "-d",
        source.dsn,
        "-D",
        "-",
        "-F",
        "tar",
        "-X",
        "none",
        "--checkpoint=fast",
        "--manifest-checksums=CRC32C",
        "--label",
        label,
    ]


def stream_base_backup(
    repo: Repository, backup_id: str, source: PostgresSource, segment_size: int, progress: Progress | None = None
) -> Streamed:
    """Run pg_basebackup and store its tar stream; return what it said about the backup."""
    start_time = server_clock(source)
    run = _BaseBackupRun(source, backup_id)
    key = backup_prefix(source.name, backup_id) + "base.tar"
    counter = _Throughput(progress or silent())
    try:
        stored = repo.put_object(key, counter.read(run.chunks()), on_stored=counter.stored)
        counter.show(stored.stored_size)
    finally:
        run.finish()
    run.raise_for_failure()
    manifest = json.loads(run.scanner.captured["backup_manifest"])
    manifest_object = repo.put_object(
        backup_prefix(source.name, backup_id) + "backup_manifest", [run.scanner.captured["backup_manifest"]]
    )
    wal_range = manifest["WAL-Ranges"][-1]
    return Streamed(
        objects=[stored, manifest_object],
        label=run.scanner.captured["backup_label"].decode(),
        manifest=manifest,
        timeline=int(wal_range["Timeline"]),
        start_lsn=wal.parse_lsn(wal_range["Start-LSN"]),
        stop_lsn=wal.parse_lsn(wal_range["End-LSN"]),
        start_time=start_time,
        stop_time=server_clock(source),
        segment_size=segment_size,
        files=len(manifest.get("Files", [])),
        raw_size=stored.raw_size,
        checksum_failures=run.checksum_failures,
    )


class _Throughput:
    """Bytes read from pg_basebackup and stored in the repository, shown as they pass."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.bytes_read = self.bytes_stored = 0

    def read(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes_read += len(chunk)
            self.show(self.bytes_stored)
            yield chunk

    def stored(self, size: int) -> None:
        self.bytes_stored += size

    def show(self, stored: int) -> None:
        self.progress.update(self.bytes_read, note=f"stored {human_size(stored)}")


def server_clock(source: PostgresSource) -> float:
    """The server's clock (what commit timestamps use), as a UNIX time."""
    with connect(source) as conn:
        return float(conn.execute("select extract(epoch from clock_timestamp())").fetchone()[0])


class _BaseBackupRun:
    """One pg_basebackup process: its stdout as chunks, its stderr collected, a watchdog on the end.

    The server sends ``global/pg_control`` last, then waits in pg_backup_stop until the WAL is
    archived; if that wait outlasts ``backup_timeout`` the process is stopped and the run fails.
    """

    def __init__(self, source: PostgresSource, backup_id: str):
        self.source = source
        self.scanner = TarScanner(capture=("backup_label", "backup_manifest"), on_member=self._member)
        self.stderr_lines: list[str] = []
        self.timed_out = False
        self.stopping_since: float | None = None
        env = {**os.environ, "PGAPPNAME": "hadr-backup", "PGCONNECT_TIMEOUT": "10"}
        self.process = subprocess.Popen(
            pg_basebackup_argv(source, f"hadr {backup_id}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        _grow_pipe(self.process.stdout.fileno())
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def _member(self, member: Member) -> None:
        if member.name == "global/pg_control":
            self.stopping_since = time.monotonic()

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip())

    def _watch(self) -> None:
        while not self._done.wait(0.5):
            since = self.stopping_since
            if since is not None and time.monotonic() - since > self.source.backup_timeout:
                self.timed_out = True
                self.process.kill()
                return

    def chunks(self) -> Iterator[bytes]:
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, READ_SIZE):
            self.scanner.feed(chunk)
            yield chunk

    def finish(self) -> None:
        """Wait for the process (stopping it if the stream was abandoned) and its stderr."""
        if self.process.poll() is None and not self.scanner.ended:
            self.process.kill()
        self.process.wait()
        self._done.set()
        self._stderr.join(timeout=10)
        self.process.stdout.close()

    @property
    def checksum_failures(self) -> list[str]:
        return [
            line.split("WARNING:", 1)[1].strip()
            for line in self.stderr_lines
            if "WARNING:" in line and "checksum verification failed" in line
        ]

    def raise_for_failure(self) -> None:
        tail = "\n".join(self.stderr_lines[-15:]) or "(no output)"
        if self.timed_out:
            state = archiver_state(self.source)
            label = self.scanner.captured.get("backup_label", b"").decode(errors="replace")
            segment = (state or {}).get("last_failed_wal") or _label_field(label, "START WAL LOCATION") or "?"
            raise BackupFailed(
                f"WAL segment {segment} was not archived within {self.source.backup_timeout:g} s "
                f"(PostgreSQL's pg_backup_stop was still waiting for the backup's WAL); without "
                f"it the backup cannot be restored",
                hint=archiver_hint(self.source),
            )
        complete = self.scanner.ended and {"backup_label", "backup_manifest"} <= set(self.scanner.captured)
        only_checksums = any(
            "checksum error occurred" in line or "checksum verification failure" in line for line in self.stderr_lines
        )
        if self.process.returncode != 0 and not (complete and only_checksums):
            raise BackupFailed(f"pg_basebackup failed (exit {self.process.returncode}):\n{tail}")
        if not complete:
            raise BackupFailed(
                "pg_basebackup ended without a complete tar stream (backup_label, "
                "backup_manifest and the end-of-archive marker)",
                hint=tail,
            )


def _grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer: fewer, larger reads (Linux only; harmless elsewhere)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), READ_SIZE)
    except OSError:
        pass


def _label_field(label: str, field_name: str) -> str | None:
    """``START WAL LOCATION: 0/2000028 (file 000000010000000000000002)`` -> the file name."""
    for line in label.splitlines():
        if line.startswith(field_name + ":") and "(file " in line:
            return line.split("(file ", 1)[1].rstrip(")")
    return None


# -- WAL needed for consistency --------------------------------------------------------------------


def required_segments(streamed: Streamed) -> list[str]:
    span = [wal.TimelineSpan(streamed.timeline, 0, None)]
    return wal.segments_for_range(
        streamed.start_lsn, max(streamed.stop_lsn - 1, streamed.start_lsn), span, streamed.segment_size
    )


def wait_for_wal(repo: Repository, source: PostgresSource, streamed: Streamed, poll: float = 0.2) -> None:
    """Return once every segment from the backup's start to its stop is archived in the repository;
    switch WAL if the last one is still being written; fail after ``backup_timeout`` naming the gap.
    Each poll lists only the folders of the segments still missing, not the whole archive."""
    needed = required_segments(streamed)
    deadline = time.monotonic() + source.backup_timeout
    switched = False
    missing = needed
    while True:
        archived = wal.list_archived_for(repo, source.name, missing)
        missing = [name for name in missing if archived.find(name) is None]
        if not missing:
            return
        if not switched and missing[-1] == needed[-1]:
            switched = _switch_if_current(source, needed[-1], streamed.segment_size)
        if time.monotonic() >= deadline:
            raise BackupFailed(
                f"WAL segment {missing[0]} was not archived into the repository within "
                f"{source.backup_timeout:g} s ({len(missing)} of {len(needed)} needed segments "
                f"missing); without it the backup cannot be restored",
                hint=archiver_hint(source),
            )
        time.sleep(poll)
        poll = min(poll * 1.5, 2.0)


def consistency_wal(repo: Repository, source_name: str, streamed: Streamed) -> list[str]:
    """The archived WAL objects the backup cannot be made consistent without."""
    return [
        versions[0].key
        for name in required_segments(streamed)
        if (versions := stored_versions(repo.store, source_name, name))
    ]


def _switch_if_current(source: PostgresSource, last_needed: str, segment_size: int) -> bool:
    """pg_switch_wal() when the server is still writing the backup's last segment."""
    with connect(source) as conn:
        current = conn.execute("select pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()[0]
        if current == last_needed:
            conn.execute("select pg_switch_wal()")
            return True
    return False


# -- what the catalog records ----------------------------------------------------------------------


def backup_meta(facts: ServerFacts, streamed: Streamed) -> dict[str, Any]:
    return PgBackupMeta(
        tar_objects=(streamed.objects[0].key,),
        manifest_object=streamed.objects[1].key,
        label=streamed.label,
        timeline=streamed.timeline,
        start_lsn=wal.format_lsn(streamed.start_lsn),
        stop_lsn=wal.format_lsn(streamed.stop_lsn),
        start_wal=streamed.start_wal,
        stop_wal=streamed.stop_wal,
        start_time=streamed.start_time,
        stop_time=streamed.stop_time,
        system_identifier=facts.system_identifier,
        pg_version_num=facts.version_num,
        pg_version=facts.version,
        wal_segment_size=streamed.segment_size,
        data_checksums=facts.data_checksums,
        checksum_failures=tuple(streamed.checksum_failures),
        databases=tuple(facts.databases),
        files=streamed.files,
    ).to_meta()


def _result(entry, streamed: Streamed, facts: ServerFacts, seconds: float, warnings: list[str]) -> BackupResult:
    notes = list(warnings)
    if not facts.data_checksums:
        notes.append("data checksums are off in this cluster: page corruption cannot be detected (initdb -k)")
    return BackupResult(
        backup_id=entry.id,
        source=entry.source,
        state=entry.state,
        timeline=streamed.timeline,
        start_lsn=wal.format_lsn(streamed.start_lsn),
        stop_lsn=wal.format_lsn(streamed.stop_lsn),
        start_wal=streamed.start_wal,
        stop_wal=streamed.stop_wal,
        start_time=streamed.start_time,
        stop_time=streamed.stop_time,
        raw_size=entry.raw_size,
        stored_size=entry.stored_size,
        files=streamed.files,
        seconds=seconds,
        databases=facts.databases,
        checksum_failures=streamed.checksum_failures,
        warnings=notes,
        system_identifier=facts.system_identifier,
    )
