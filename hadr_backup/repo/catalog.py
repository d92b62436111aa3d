"""The catalog: which backups exist, and the single source of truth for list, retention, restore
selection and verification.

Written atomically through the storage driver (temp + fsync + rename locally, a confirmed PUT on
S3), then again as a ``.copy`` twin; each file carries the SHA-256 of its content, so a torn or
damaged file is detected and the twin is used (as pgBackRest does with its info files). Every change
is a compare-and-swap against the version that was read (``Repository.update_catalog``), so two
writers never lose each other's entries. An entry is ``complete`` only after everything it needs is
stored; a ``running`` entry whose own heartbeat stops (its process is gone, or it has not renewed for
longer than the lease) is judged interrupted, and the next writer marks it ``failed``.

States: running -> complete | failed; complete -> expiring (a prune is removing it) -> dropped; failed
-> dropped by a prune. Format 2 added ``host``, ``heartbeat_at``, ``prefix``, ``cleaned`` and the source-neutral
``consistent_at``, ``parent`` and ``needs``; format 1 catalogs are read as they are (those fields take
their defaults; kind-specific metadata stays in ``meta``, which each engine reads through its own type).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from hadr_backup.errors import IntegrityError, RepositoryError
from hadr_backup.repo.layout import CATALOG as CATALOG_KEY
from hadr_backup.repo.layout import CATALOG_COPY as COPY_KEY
from hadr_backup.repo.layout import backup_prefix
from hadr_backup.timefmt import compact

FORMAT = 2
READABLE_FORMATS = (1, 2)

RUNNING, COMPLETE, FAILED = "running", "complete", "failed"
# ``hadr prune`` marks what it expires before it deletes anything: restore, list windows and verify read
# only complete entries, and a prune killed half way finds what it had begun and finishes it
EXPIRING = "expiring"
STATES = (RUNNING, COMPLETE, FAILED, EXPIRING)


@dataclass
class StoredObject:
    key: str
    raw_size: int
    stored_size: int
    sha256: str  # of the stored bytes

    @classmethod
    def from_json(cls, data: dict) -> StoredObject:
        return cls(**data)


@dataclass
class BackupEntry:
    id: str
    kind: str  # pg | redis | s3
    source: str
    state: str = RUNNING
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None
    raw_size: int = 0
    stored_size: int = 0
    objects: list[StoredObject] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    pid: int = field(default_factory=os.getpid)
    host: str | None = field(default_factory=socket.gethostname)  # None: written by format 1
    heartbeat_at: float | None = None  # renewed by the running process; None: never renewed
    prefix: str | None = None  # where its objects (and the leftovers of interrupted writes) live
    cleaned: bool = False  # a failed entry's objects have been removed
    consistent_at: float | None = None  # the earliest instant it restores to, whatever its kind
    parent: str | None = None  # the backup it is chained to (incremental), None for a full one
    needs: list[str] = field(default_factory=list)  # objects outside its own it cannot be restored without

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    @property
    def object_prefix(self) -> str:
        return self.prefix or backup_prefix(self.kind, self.source, self.id)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BackupEntry:
        data = dict(data)
        data["objects"] = [StoredObject.from_json(o) for o in data.get("objects", [])]
        data.setdefault("host", None)  # format 1 did not record it: unknown, never "this host"
        return cls(**data)


def new_backup_id(kind: str, when: float | None = None) -> str:
    return f"{compact(when or None)}-{kind}-{secrets.token_hex(2)}"


@dataclass
class Catalog:
    entries: list[BackupEntry] = field(default_factory=list)
    loaded_from: str | None = CATALOG_KEY  # None: neither the catalog nor its copy exists

    def get(self, backup_id: str) -> BackupEntry | None:
        return next((e for e in self.entries if e.id == backup_id), None)

    def add(self, entry: BackupEntry) -> BackupEntry:
        self.entries.append(entry)
        return entry

    def remove(self, backup_id: str) -> None:
        self.entries = [e for e in self.entries if e.id != backup_id]

    def select(
        self, *, kind: str | None = None, source: str | None = None, state: str | None = None
    ) -> list[BackupEntry]:
        return sorted(
            (
                e
                for e in self.entries
                if (kind is None or e.kind == kind)
                and (source is None or e.source == source)
                and (state is None or e.state == state)
            ),
            key=lambda e: e.started_at,
        )

    # -- serialisation -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        body = {"format": FORMAT, "entries": [e.to_json() for e in self.entries]}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        checksum = hashlib.sha256(canonical.encode()).hexdigest()
        return json.dumps({"checksum": checksum, "catalog": body}, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, name: str) -> Catalog:
        try:
            wrapper = json.loads(raw)
            body = wrapper["catalog"]
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{name} is not a readable catalog") from None
        if hashlib.sha256(canonical.encode()).hexdigest() != wrapper.get("checksum"):
            raise IntegrityError(f"{name} does not match its checksum")
        if body.get("format") not in READABLE_FORMATS:
            raise RepositoryError(
                f"{name} has catalog format {body.get('format')}, this hadr reads "
                f"{', '.join(map(str, READABLE_FORMATS))}",
                hint="upgrade hadr",
            )
        return cls([BackupEntry.from_json(e) for e in body["entries"]], loaded_from=name)


def load_catalog(read: Callable[[str], bytes | None]) -> tuple[Catalog, list[str]]:
    """Load the catalog, falling back to the copy. ``read(key)`` returns None for a missing object.

    Returns the catalog and warnings (e.g. "catalog.json damaged, loaded the copy"); when both are
    missing, an empty catalog whose ``loaded_from`` is None (the caller decides whether that is a
    new repository or a lost catalog).
    """
    warnings, problems = [], []
    for key in (CATALOG_KEY, COPY_KEY):
        try:
            raw = read(key)
        except IntegrityError as error:
            problems.append(f"{key}: {error}")
            continue
        if raw is None:
            problems.append(f"{key}: missing")
            continue
        try:
            catalog = Catalog.from_bytes(raw, key)
        except IntegrityError as error:
            problems.append(str(error))
            continue
        if key == COPY_KEY:
            warnings.append(f"{CATALOG_KEY} could not be used ({problems[0]}); loaded its copy")
        return catalog, warnings
    if all(p.endswith(": missing") for p in problems):
        return Catalog(loaded_from=None), warnings
    raise IntegrityError(
        "the catalog and its copy are both unreadable: " + "; ".join(problems),
        hint="run `hadr repair catalog` to rebuild it from the backups' own descriptions",
    )


def interrupted(
    entries: Iterable[BackupEntry], *, now: float, host: str, stale_after: float, alive: Callable[[int], bool]
) -> list[BackupEntry]:
    """``running`` entries whose own heartbeat says their process is gone: it ran on this host and its
    pid is dead, or it has not renewed its heartbeat for ``stale_after`` seconds (format-1 entries,
    which have none, count from their start). Who holds the lock says nothing about them."""
    found = []
    for entry in entries:
        if entry.state != RUNNING:
            continue
        beat = entry.heartbeat_at or entry.started_at
        if (entry.host == host and not alive(entry.pid)) or now - beat > stale_after:
            found.append(entry)
    return found
