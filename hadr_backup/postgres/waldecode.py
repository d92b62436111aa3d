"""Reading archived WAL: segments fetched from the repository into a private temp dir, decoded by
PostgreSQL's own ``pg_waldump``.

Restore uses this to prove, before it touches anything, that a target can be reached: that a commit
after the target time exists, that a transaction's commit or a restore point is in the archive, where
the archive really ends. Every fetched segment is checked against the SHA-256 its key carries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hadr_backup.errors import HadrError
from hadr_backup.postgres import wal
from hadr_backup.postgres.archive import write_verified

COMMIT, ABORT, RESTORE_POINT, OTHER = "commit", "abort", "restore_point", "other"
_HEAD = (
    r"len \(rec/tot\):\s+\d+/\s*(?P<total>\d+), tx:\s+(?P<xid>\d+), "
    r"lsn: (?P<hi>[0-9A-F]+)/(?P<lo>[0-9A-F]+), prev \S+ "
)
_RECORD = re.compile(
    r"^rmgr: \S+\s+len \(rec/tot\):\s+\d+/\s*(?P<total>\d+), tx:\s+(?P<xid>\d+), "
    r"lsn: (?P<lsn>[0-9A-F]+/[0-9A-F]+), ",
    re.MULTILINE,
)
_XACT_LINE = re.compile(
    r"^rmgr: Transaction\s+" + _HEAD + r"desc: (?P<kind>COMMIT|ABORT)(?:_PREPARED (?P<prepared>\d+):)? "
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC",
    re.MULTILINE,
)
_POINT_LINE = re.compile(r"^rmgr: XLOG\s+" + _HEAD + r"desc: RESTORE_POINT (?P<name>.*)$", re.MULTILINE)
_MISSING_FILE = re.compile(r'could not find file "(?P<name>[0-9A-F]{24})"')


class WalDecodeError(HadrError):
    """Archived WAL could not be read."""


@dataclass(frozen=True)
class WalRecord:
    lsn: int
    end_lsn: int
    kind: str  # commit | abort | restore_point | other
    xid: int = 0
    time: datetime | None = None
    name: str | None = None


@dataclass
class Decoded:
    """Records of a run of segments; ``error`` is what stopped pg_waldump early (None: read to the end)."""

    records: list[WalRecord] = field(default_factory=list)
    error: str | None = None
    missing_next: str | None = None  # the file pg_waldump looked for after the run (normal at its end)

    @property
    def damaged(self) -> bool:
        return self.error is not None and self.missing_next is None


def parse_waldump(text: str, *, everything: bool = False) -> list[WalRecord]:
    """The records in pg_waldump's output (run with TZ=UTC): transaction ends and restore points, or
    with ``everything`` every record."""
    if not everything:
        return sorted(_ends(text) + _restore_points(text), key=lambda r: r.lsn)
    records = []
    for match in _RECORD.finditer(text):
        lsn = wal.parse_lsn(match["lsn"])
        records.append(WalRecord(lsn, lsn + (int(match["total"]) + 7) // 8 * 8, OTHER, int(match["xid"])))
    ends = {r.lsn: r for r in _ends(text) + _restore_points(text)}
    return [ends.get(r.lsn, r) for r in records]


def _ends(text: str) -> list[WalRecord]:
    found = []
    for match in _XACT_LINE.finditer(text):
        lsn = (int(match["hi"], 16) << 32) | int(match["lo"], 16)
        xid = int(match["prepared"] or match["xid"])
        when = datetime.fromisoformat(match["time"]).replace(tzinfo=UTC)
        found.append(
            WalRecord(
                lsn, lsn + (int(match["total"]) + 7) // 8 * 8, COMMIT if match["kind"] == "COMMIT" else ABORT, xid, when
            )
        )
    return found


def _restore_points(text: str) -> list[WalRecord]:
    found = []
    for match in _POINT_LINE.finditer(text):
        lsn = (int(match["hi"], 16) << 32) | int(match["lo"], 16)
        found.append(
            WalRecord(lsn, lsn + (int(match["total"]) + 7) // 8 * 8, RESTORE_POINT, name=match["name"].rstrip())
        )
    return found


def copy_archived(
    repo,
    archived: wal.ArchivedWal,
    name: str,
    path: Path,
    *,
    durable: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write archived WAL file ``name`` to ``path`` whole and SHA-256 checked (``durable``: fsynced)."""
    found = archived.find(name)
    if found is None:
        raise WalDecodeError(f"WAL segment {name} is not in the repository")
    write_verified(repo.read_object(found.key), path, found.sha256, name, owner=owner, sync=durable)


class WalReader:
    """Fetches segments of one source and decodes runs of them; ``close()`` removes the temp dir."""

    def __init__(
        self,
        repo,
        source: str,
        archived: wal.ArchivedWal,
        bin_dir: str,
        segment_size: int = wal.DEFAULT_SEGMENT_SIZE,
        *,
        directory: Path | None = None,
        keep: int = 0,
    ):
        self.repo, self.source, self.archived = repo, source, archived
        self.waldump = os.path.join(bin_dir, "pg_waldump")
        self.segment_size = segment_size
        self._dir: Path | None = directory
        self._own_dir = directory is None  # a caller's directory is the caller's to remove
        self.keep = keep  # fetched segments kept for the caller (beyond these, scans forget them)

    def __enter__(self) -> WalReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._dir is not None and self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="hadr-wal-"))
        return self._dir

    def fetch(self, name: str) -> Path:
        """The plaintext of archived segment ``name`` in the temp dir, its SHA-256 checked."""
        path = self.directory / name
        if not path.exists():
            copy_archived(self.repo, self.archived, name, path)
        return path

    def forget(self, names: list[str]) -> None:
        """Drop fetched segments a long scan is done with (unless fewer than ``keep`` are cached)."""
        if len(list(self.directory.iterdir())) <= self.keep:
            return
        for name in names:
            (self.directory / name).unlink(missing_ok=True)

    def decode(self, names: list[str], *, everything: bool = False, start_lsn: int | None = None) -> Decoded:
        """Decode consecutive segments of one timeline; with ``everything`` every record, else only
        transaction ends and restore points. The segment after the run is fetched too when archived,
        so that a record crossing the run's end is read whole."""
        if not names:
            return Decoded()
        timeline = wal.timeline_of(names[0])
        for name in names:
            self.fetch(name)
        after = wal.next_segment(names[-1], self.segment_size)
        if self.archived.find(after) is not None:
            self.fetch(after)
        start = start_lsn if start_lsn is not None else wal.segment_start_lsn(names[0], self.segment_size)
        end = wal.segment_start_lsn(names[-1], self.segment_size) + self.segment_size
        argv = [
            self.waldump,
            "-p",
            str(self.directory),
            "-t",
            str(timeline),
            "-s",
            wal.format_lsn(start),
            "-e",
            wal.format_lsn(end),
        ]
        if not everything:
            argv += ["-r", "Transaction", "-r", "XLOG"]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
        decoded = Decoded(records=parse_waldump(done.stdout, everything=everything))
        if done.returncode != 0:
            decoded.error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pg_waldump failed"
            missing = _MISSING_FILE.search(done.stderr)
            if missing and missing["name"] not in names:
                decoded.missing_next = missing["name"]
        return decoded
