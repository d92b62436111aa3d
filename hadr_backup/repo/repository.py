"""The repository: storage + catalog + pipeline + keys, opened as one resource.

    with open_repo(policy, write=True) as repo:      # takes the lock, loads the catalog
        entry = repo.begin_backup("pg", "main", meta)
        stored = repo.put_object(f"backups/{entry.id}/base.tar", stream)
        repo.finish_backup(entry, [stored])

Layout of a repository::

    hadr.repo.json            identity: format, id, creation time, encryption key ids (never keys)
    keys/<data-key-id>.json   data keys wrapped by the master key
    catalog.json(.copy)       the catalog and its checksummed twin
    backups/<kind>/<source>/<backup-id>/...    backup objects
    wal/<source>/...          archived PostgreSQL WAL
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from hadr_backup.errors import (
    KeyMissing,
    ObjectMissing,
    RepositoryError,
    RepositoryNotInitialized,
    UsageError,
)
from hadr_backup.policy.model import Policy
from hadr_backup.repo import catalog as catalog_io
from hadr_backup.repo.catalog import COMPLETE, FAILED, BackupEntry, Catalog, StoredObject, new_backup_id
from hadr_backup.repo.storage import ReadOnlyStorage, RetryingStorage, Storage, read_all

META_KEY = "hadr.repo.json"
REPO_FORMAT = 1


def make_storage(policy: Policy, *, create: bool = False) -> Storage:
    config = policy.repository
    if config.is_s3:
        from hadr_backup.repo.s3 import S3Storage

        return RetryingStorage(S3Storage(config.bucket, config.prefix, endpoint=config.endpoint,
                                         region=config.region, access_key=config.access_key,
                                         secret_key=config.secret_key))
    from hadr_backup.repo.local import LocalStorage

    return LocalStorage(config.path, create=create)


def lock_path(policy: Policy) -> Path:
    config = policy.repository
    if config.path:
        return Path(config.path) / ".lock"
    digest = hashlib.sha256(f"{config.endpoint}|{config.url}".encode()).hexdigest()[:16]
    base = Path(config.lock_dir) if config.lock_dir else Path.home() / ".cache" / "hadr" / "locks"
    return base / f"{digest}.lock"


@dataclass
class Repository:
    policy: Policy
    store: Storage
    meta: dict
    writable: bool
    data_key: object | None = None  # keys.DataKey when encrypted
    catalog: Catalog = field(default_factory=Catalog)
    warnings: list[str] = field(default_factory=list)
    master_key: object | None = None  # keys.MasterKey; opens data keys other than the current one

    # -- objects through the pipeline ----------------------------------------------------------

    @property
    def codec(self):
        from hadr_backup.repo.pipeline import Codec

        compression = self.policy.compression
        return Codec(level=compression.level, threads=compression.threads, data_key=self.data_key)

    def put_object(self, key: str, source: Iterable[bytes] | BinaryIO, *,
                   if_absent: bool = False) -> StoredObject:
        """Compress, encrypt and store ``source`` under ``key``; return what was stored."""
        from hadr_backup.repo.pipeline import encode

        stream, digest = encode(source, self.codec)
        self.store.put(key, stream, if_absent=if_absent)
        return StoredObject(key, digest.raw_size, digest.stored_size, digest.sha256)

    def read_object(self, key: str, *, sha256: str | None = None) -> Iterator[bytes]:
        """Stream the plaintext of ``key``, verified chunk by chunk (and whole, given ``sha256``)."""
        from hadr_backup.repo.pipeline import decode

        return decode(self.store.get(key), self._key_for, expected_sha256=sha256)

    def object_problem(self, stored: StoredObject) -> tuple[str, str] | None:
        """(code, what is wrong) when ``stored`` is missing from storage or not the size the catalog
        recorded; None when it is there, whole (its content is checked only when read)."""
        info = self.store.stat(stored.key)
        if info is None:
            return "object-missing", f"{stored.key} is missing"
        if info.size != stored.stored_size:
            return "size-mismatch", f"{stored.key} is {info.size} bytes, the catalog says {stored.stored_size}"
        return None

    def put_json(self, key: str, value: dict, *, if_absent: bool = False) -> StoredObject:
        return self.put_object(key, [json.dumps(value, sort_keys=True).encode()], if_absent=if_absent)

    def read_json(self, key: str) -> dict:
        return json.loads(b"".join(self.read_object(key)))

    def _key_for(self, key_id: str):
        if self.data_key is None:
            raise KeyMissing(f"this object is encrypted with data key {key_id} and no key is configured",
                             hint="set encryption.key_file or encryption.key_env in the policy")
        if self.data_key.id != key_id:
            return load_data_key(self.store, key_id, self.master_key)
        return self.data_key

    # -- catalog -------------------------------------------------------------------------------

    def load_catalog(self) -> None:
        def read(key: str) -> bytes | None:
            if self.store.stat(key) is None:
                return None
            return b"".join(self.read_object(key))

        self.catalog, warnings = catalog_io.load_catalog(read)
        self.warnings.extend(warnings)

    def save_catalog(self) -> None:
        self._require_write()
        catalog_io.save_catalog(self.catalog, lambda key, data: self.put_object(key, [data]))

    def begin_backup(self, kind: str, source: str, meta: dict | None = None) -> BackupEntry:
        """Record a backup as running before any of its data is stored."""
        entry = self.catalog.add(BackupEntry(id=new_backup_id(kind), kind=kind, source=source,
                                             meta=dict(meta or {})))
        self.save_catalog()
        return entry

    def finish_backup(self, entry: BackupEntry, objects: list[StoredObject], meta: dict | None = None) -> None:
        """Mark complete: call only once every object the backup needs is durably stored."""
        entry.objects = list(objects)
        entry.raw_size = sum(o.raw_size for o in objects)
        entry.stored_size = sum(o.stored_size for o in objects)
        entry.meta.update(meta or {})
        entry.stopped_at = entry.stopped_at or time.time()
        entry.state = COMPLETE
        self.save_catalog()

    def fail_backup(self, entry: BackupEntry, reason: str) -> None:
        entry.state, entry.error = FAILED, reason
        entry.stopped_at = entry.stopped_at or time.time()
        self.save_catalog()

    def _require_write(self) -> None:
        if not self.writable:
            raise RepositoryError("the repository is open read-only")

    @property
    def encrypted(self) -> bool:
        return bool(self.meta.get("encryption", {}).get("data_key_id"))


# -- keys -----------------------------------------------------------------------------------------


def key_record_key(data_key_id: str) -> str:
    return f"keys/{data_key_id}.json"


def load_data_key(store: Storage, data_key_id: str, master):
    from hadr_backup.repo.keys import unwrap_data_key

    try:
        record = json.loads(read_all(store, key_record_key(data_key_id)))
    except ObjectMissing:
        raise RepositoryError(f"data key {data_key_id} is missing from the repository ({store.describe()})",
                              hint="restore keys/ from a copy of the repository") from None
    return unwrap_data_key(record, master)


def master_key_for(policy: Policy):
    from hadr_backup.repo.keys import load_master_key

    config = policy.encryption
    if not config.enabled:
        return None
    return load_master_key(key_file=config.key_file, env_var=config.key_env)


def read_meta(store: Storage) -> dict:
    try:
        return json.loads(read_all(store, META_KEY))
    except ObjectMissing:
        raise RepositoryNotInitialized(f"there is no hadr repository at {store.describe()}",
                                       hint="run `hadr init` first") from None
    except ValueError:
        raise RepositoryError(f"{META_KEY} at {store.describe()} is damaged") from None


# -- opening --------------------------------------------------------------------------------------


@contextmanager
def open_repo(policy: Policy, *, write: bool = False, lock: bool | None = None,
              catalog: bool = True) -> Iterator[Repository]:
    """Open the repository: read-only by default; ``write`` takes the lock unless ``lock=False``
    (wal-push writes without the lock: each segment is its own atomic, conditional object).
    ``catalog=False`` skips loading the catalog (wal-push and wal-fetch do not need it)."""
    from hadr_backup.repo.lock import RepoLock

    take_lock = write if lock is None else lock
    store = make_storage(policy)
    repo_lock = RepoLock(lock_path(policy)).acquire() if take_lock else None
    try:
        repo = _open(policy, store if write else ReadOnlyStorage(store), write, catalog)
        if repo_lock and repo_lock.previous_holder:
            repo.warnings.append(f"took over a stale lock of pid {repo_lock.previous_holder.get('pid')}")
        if take_lock and write and catalog:
            _fail_interrupted(repo)
        yield repo
    finally:
        if repo_lock:
            repo_lock.release()


def _open(policy: Policy, store: Storage, write: bool, catalog: bool) -> Repository:
    meta = read_meta(store)
    if meta.get("format") != REPO_FORMAT:
        raise RepositoryError(f"repository format {meta.get('format')} is not supported by this hadr")
    repo = Repository(policy=policy, store=store, meta=meta, writable=write)
    key_id = meta.get("encryption", {}).get("data_key_id")
    if key_id:
        master = master_key_for(policy)
        if master is None:
            raise KeyMissing(f"the repository at {store.describe()} is encrypted (data key {key_id}) "
                             f"and the policy names no key",
                             hint="set encryption.key_file or encryption.key_env in the policy")
        repo.master_key = master
        repo.data_key = load_data_key(store, key_id, master)
    elif policy.encryption.enabled:
        raise UsageError(f"the policy names an encryption key but the repository at {store.describe()} "
                         f"is not encrypted", hint="remove encryption from the policy or use a new repository")
    if catalog:
        repo.load_catalog()
    return repo


def _fail_interrupted(repo: Repository) -> None:
    stale = catalog_io.interrupted(repo.catalog.entries)
    for entry in stale:
        entry.state, entry.error = FAILED, f"interrupted (pid {entry.pid} is gone)"
    if stale:
        repo.save_catalog()
        repo.warnings.append(f"marked {len(stale)} interrupted backup(s) as failed")


def init_repo(policy: Policy) -> tuple[dict, bool]:
    """Create the repository (or check an existing one). Returns (meta, created)."""
    from hadr_backup.repo.keys import new_data_key, wrap_data_key

    store = make_storage(policy, create=True)
    if store.stat(META_KEY) is not None:
        with open_repo(policy) as repo:  # proves the key opens it
            return repo.meta, False
    master = master_key_for(policy)
    meta = {"format": REPO_FORMAT, "id": secrets.token_hex(8), "created_at": time.time(),
            "encryption": {}}
    if master is not None:
        data_key = new_data_key()
        store.put(key_record_key(data_key.id), [json.dumps(wrap_data_key(data_key, master)).encode()],
                  if_absent=True)
        meta["encryption"] = {"cipher": "aes-256-gcm", "data_key_id": data_key.id,
                              "master_key_id": master.id}
    store.put(META_KEY, [json.dumps(meta, indent=1).encode()], if_absent=True)
    return meta, True
