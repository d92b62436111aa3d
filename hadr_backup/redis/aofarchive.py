"""``hadr archive redis``: what Redis appended to its multi-part AOF since the last run, into the
repository as a stream of immutable pieces (as PostgreSQL's WAL is archived).

Each piece is ``aof/<source>/<file>/<start>-<end>``: bytes [start, end) of one AOF file (a base file is
one piece, whole). The archive's state ``aof/<source>/archive.json`` records per file the offset archived
so far and its pieces, the manifest last seen and the generations seen (aofgenerations.py); it is written
with compare-and-swap, always after the piece it records. A kill at any point therefore leaves either a
piece the state does not know yet (the rerun finds it at the state's offset, checks that it holds the
file's bytes, and adopts it) or nothing new: no byte is lost and none is stored twice.

With ``aof-disable-auto-gc yes`` Redis keeps history files (what a rewrite replaced); hadr removes each
one once it is archived whole. The settings it needs are checked first (aofsettings.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.errors import HadrError, LockHeld, ObjectChanged, ObjectExists, RepositoryError
from hadr_backup.policy.model import Policy
from hadr_backup.redis import aoffiles
from hadr_backup.redis.aoffiles import BASE, HISTORY, AofFile
from hadr_backup.redis.aofgenerations import note_generation
from hadr_backup.redis.aofsettings import read_settings
from hadr_backup.redis.wire import Address
from hadr_backup.repo import layout
from hadr_backup.timefmt import rfc3339

STATE_FORMAT = 1


class AofArchiveChanged(RepositoryError):
    """The AOF archive and the AOF directory disagree."""


@dataclass
class FileReport:
    name: str
    type: str
    archived: int  # offset archived so far
    bytes: int = 0  # archived by this run
    pieces: int = 0  # stored (or adopted) by this run
    removed: bool = False  # a history file hadr removed from the AOF directory

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AofArchiveResult:
    source: str
    mode: str  # archiving | snapshots-only
    aof_dir: str | None
    note: str = ""
    passes: int = 0
    files: dict[str, FileReport] = field(default_factory=dict)
    archived_at: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_archived(self) -> int:
        return sum(f.bytes for f in self.files.values())

    @property
    def pieces_stored(self) -> int:
        return sum(f.pieces for f in self.files.values())

    @property
    def removed(self) -> list[str]:
        return [f.name for f in self.files.values() if f.removed]

    def merge(self, other: AofArchiveResult) -> None:
        """Add a later pass of ``--follow`` to this one."""
        self.passes += other.passes
        self.archived_at, self.note = other.archived_at or self.archived_at, other.note
        self.warnings += [w for w in other.warnings if w not in self.warnings]
        for name, report in other.files.items():
            mine = self.files.setdefault(name, FileReport(name, report.type, report.archived))
            mine.type, mine.archived = report.type, report.archived
            mine.bytes, mine.pieces = mine.bytes + report.bytes, mine.pieces + report.pieces
            mine.removed = mine.removed or report.removed

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "mode": self.mode,
            "aof_dir": self.aof_dir,
            "note": self.note,
            "passes": self.passes,
            "files": [f.to_json() for f in self.files.values()],
            "bytes_archived": self.bytes_archived,
            "pieces_stored": self.pieces_stored,
            "removed": self.removed,
            "archived_at": rfc3339(self.archived_at),
            "warnings": self.warnings,
        }

    def render(self, out) -> None:
        out.kv([("source", self.source), ("aof dir", self.aof_dir or "-"), ("archive", self.note)])
        if self.files:
            rows = [
                (f.name, f.type, f.archived, f.bytes, f.pieces, "yes" if f.removed else "") for f in self.files.values()
            ]
            out.table("AOF files", ["file", "type", "archived to", "bytes now", "pieces", "removed"], rows)
        for warning in self.warnings:
            out.line(f"warning: {warning}")


def run_archive_redis(policy: Policy, source_name: str | None = None) -> AofArchiveResult:
    """One pass: archive what the AOF files of a Redis source hold beyond what is archived."""
    source = policy.sources.redis_named(source_name)
    if not source.aof_dir:
        return _snapshots_only(source.name, None, "the policy names no aof_dir for this source")
    settings = read_settings(Address.of_source(source))
    directory = aoffiles.find_aof_dir(source.aof_dir, settings.dir_name, settings.file_name)
    if directory is None:
        return _snapshots_only(
            source.name, source.aof_dir, f"no {settings.file_name}.manifest in {source.aof_dir}: not on this host"
        )
    settings.require_archivable()  # exit 2 with the CONFIG SET lines when a setting is wrong
    result = AofArchiveResult(source.name, "archiving", str(directory), passes=1)
    from hadr_backup.repo.repository import open_repo

    # 1. one archiver per AOF directory; pieces and state need no repository lock (as wal-push)
    with _dir_lock(directory), open_repo(policy, write=True, lock=False, catalog=False) as repo:
        _drop_leftovers(repo, source.name)
        archive = _Archive(repo, source.name, directory)
        manifest = aoffiles.read_manifest(directory, settings.file_name)
        # 2. every listed file, base and history whole, the last incr up to its last whole command
        for aof_file in manifest.files:
            result.files[aof_file.name] = archive.file(aof_file, growing=aof_file.name == manifest.last_incr)
        archive.save(manifest)  # with the generation it names (aofgenerations.py)
        # 3. history files archived whole leave the AOF directory (auto-gc is off)
        for aof_file in manifest.files:
            if aof_file.type == HISTORY and archive.remove_if_archived(aof_file):
                result.files[aof_file.name].removed = True
        result.warnings += archive.warnings
    result.archived_at = time.time()
    result.note = f"{result.pieces_stored} pieces, {result.bytes_archived} bytes archived"
    return result


def _snapshots_only(source: str, aof_dir: str | None, why: str) -> AofArchiveResult:
    note = f"snapshots only: {why}; restorable to the instants of its snapshots only"
    return AofArchiveResult(source, "snapshots-only", aof_dir, note=note, passes=1)


@contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An flock on the AOF directory itself (nothing is created in it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(
                f"another `hadr archive redis` is archiving {directory}",
                hint="run it either from the scheduler or with --follow, not both",
            ) from None
        yield
    finally:
        os.close(fd)


def _drop_leftovers(repo, source: str) -> None:
    """Temporary objects of a killed run (this process holds the directory's lock: none is live)."""
    for info in list(repo.store.list_temporary(layout.aof_prefix(source))):
        repo.store.delete_temporary(info)


def _hashed(chunks: Iterable[bytes], sha) -> Iterator[bytes]:
    for chunk in chunks:
        sha.update(chunk)
        yield chunk


def _sha256(chunks: Iterable[bytes]) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    return sha.hexdigest()


class _Archive:
    """The archive state of one source, read once, written (compare-and-swap) after each piece."""

    def __init__(self, repo, source: str, directory: Path):
        self.repo, self.source, self.directory = repo, source, directory
        self.key = layout.aof_state(source)
        state, self.token = repo.read_json_versioned(self.key)
        self.state = state or {"format": STATE_FORMAT, "source": source, "files": {}, "manifest": ""}
        self.warnings: list[str] = []

    def file(self, aof_file: AofFile, *, growing: bool) -> FileReport:
        record = self.state["files"].setdefault(
            aof_file.name, {"seq": aof_file.seq, "archived": 0, "complete": False, "removed": False, "pieces": []}
        )
        record["type"] = aof_file.type
        report = FileReport(aof_file.name, aof_file.type, record["archived"])
        if record["complete"]:
            return report
        path = self.directory / aof_file.name
        if not path.exists():
            self.warnings.append(f"{aof_file.name} is gone, archived only up to {record['archived']}: a gap")
            return report
        size = aoffiles.file_size(path)
        if size < record["archived"]:
            raise AofArchiveChanged(
                f"{path} is {size} bytes, {record['archived']} are archived: the AOF directory was replaced",
                hint=f"archive it under another source name, or remove {layout.aof_state(self.source)}",
            )
        self._adopt(path, record, report, size)
        end = aoffiles.complete_end(path, record["archived"], size) if growing else size
        if end > record["archived"]:
            self._store(path, record, report, end)
        record["complete"] = aof_file.type in (BASE, HISTORY) and record["archived"] == size
        report.archived = record["archived"]
        return report

    def _adopt(self, path: Path, record: dict, report: FileReport, size: int) -> None:
        """A piece a killed run stored before it could record it: kept if it holds the file's bytes."""
        while True:
            prefix = layout.aof_piece_prefix(self.source, path.name, record["archived"])
            found = [layout.split_aof_piece(info.key) + (info.key,) for info in self.repo.store.list(prefix)]
            if not found:
                return
            start, end, key = found[0]
            expected = _sha256(aoffiles.read_range(path, start, min(end, size)))
            if end > size or _sha256(self.repo.read_object(key)) != expected:
                raise AofArchiveChanged(f"{key} does not hold bytes {start}-{end} of {path}")
            self._record(record, report, start, end, expected)

    def _store(self, path: Path, record: dict, report: FileReport, end: int) -> None:
        start = record["archived"]
        key = layout.aof_piece(self.source, path.name, start, end)
        sha = hashlib.sha256()
        try:
            self.repo.put_object(key, _hashed(aoffiles.read_range(path, start, end), sha), if_absent=True)
            digest = sha.hexdigest()
        except ObjectExists:  # listed as absent a moment ago: another writer; same bytes or an error
            digest = _sha256(aoffiles.read_range(path, start, end))
            if _sha256(self.repo.read_object(key)) != digest:
                raise AofArchiveChanged(f"{key} does not hold bytes {start}-{end} of {path}") from None
        self._record(record, report, start, end, digest)

    def _record(self, record: dict, report: FileReport, start: int, end: int, sha256: str) -> None:
        record["pieces"].append([start, end, sha256])
        record["archived"] = end
        report.bytes += end - start
        report.pieces += 1
        self.save(None)

    def remove_if_archived(self, aof_file: AofFile) -> bool:
        record = self.state["files"].get(aof_file.name)
        path = self.directory / aof_file.name
        if not record or not record["complete"] or record["removed"]:
            return False
        path.unlink(missing_ok=True)
        record["removed"] = True
        self.save(None)
        return True

    def save(self, manifest: aoffiles.Manifest | None) -> None:
        now = time.time()
        if manifest is not None:
            self.state["manifest"] = manifest.text
            note_generation(self.state, manifest, now)
        self.state["updated_at"] = now
        try:
            self.token = self.repo.put_json_if(self.key, self.state, token=self.token)
        except ObjectChanged:
            raise AofArchiveChanged(
                f"{self.key} changed under this run: another hadr archives source {self.source}",
                hint="archive each source from one host only",
            ) from None


def archived_state(repo, source: str) -> dict | None:
    """The archive state of ``source`` (for `hadr info`), None when it was never archived."""
    state, _token = repo.read_json_versioned(layout.aof_state(source))
    return state


def follow_archive_redis(policy: Policy, source_name: str | None, seconds: float, ui=None) -> AofArchiveResult:
    """Pass after pass, ``seconds`` apart, until SIGTERM or SIGINT: the pass under way finishes first. The
    first pass's errors end it (a wrong setting is said at once); a later pass's are warnings."""
    stop = threading.Event()
    with _stop_on_signals(stop):
        result = run_archive_redis(policy, source_name)
        while result.mode == "archiving" and not stop.wait(seconds):
            try:
                later = run_archive_redis(policy, source_name)
            except HadrError as error:  # a sidecar outlives a restarting Redis or a storage hiccup
                if ui is not None:
                    ui.warn(f"this pass failed, the next one retries: {error.message}")
                result.warnings += [error.message] if error.message not in result.warnings else []
                continue
            if ui is not None and later.pieces_stored:
                ui.info(f"archived {later.bytes_archived} bytes in {later.pieces_stored} pieces")
            result.merge(later)
    return result


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
