"""The repository: storage + catalog + pipeline + keys, opened as one resource.

    with open_repo(policy, write=True) as repo:      # takes the lock, loads the catalog
        entry = repo.begin_backup(kind, source_name, meta)
        stored = repo.put_object(entry.object_prefix + "data", stream)
        repo.finish_backup(entry, [stored])

The object layout is owned by ``layout.py``. Catalog changes are compare-and-swap against the version
read (``update_catalog``), retried by re-reading and re-applying the change, so concurrent writers on
one repository never lose an entry. A repository that holds backups or WAL but no catalog is an alarm
(CatalogMissing, exit 3), never an empty repository: ``hadr repair catalog`` rebuilds it.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from hadr_backup.errors import (
    CatalogMissing,
    IntegrityError,
    KeyMissing,
    ObjectChanged,
    ObjectMissing,
    RepositoryError,
    RepositoryNotInitialized,
    UsageError,
)
from hadr_backup.policy.model import Policy
from hadr_backup.repo import backups as lifecycle
from hadr_backup.repo import catalog as catalog_io
from hadr_backup.repo import layout
from hadr_backup.repo.catalog import BackupEntry, Catalog, StoredObject
from hadr_backup.repo.storage import ReadOnlyStorage, RetryingStorage, Storage, read_all

T = TypeVar("T")
META_KEY = layout.META
REPO_FORMAT = 1
CAS_ATTEMPTS = 20


def make_storage(policy: Policy, *, create: bool = False) -> Storage:
    config = policy.repository
    if config.is_s3:
        from hadr_backup.repo.s3 import S3Storage

        return RetryingStorage(
            S3Storage(
                config.bucket,
                config.prefix,
                endpoint=config.endpoint,
                region=config.region,
                access_key=config.access_key,
                secret_key=config.secret_key,
            )
        )
    from hadr_backup.repo.local import LocalStorage

    return LocalStorage(config.path, create=create)


def make_lock(policy: Policy, store: Storage):
    """The lock of this repository: an flock beside a local one, a lease object inside an S3 one."""
    from hadr_backup.repo.lock import LeaseLock, RepoLock

    config = policy.repository
    if store.features.local_path:
        return RepoLock(Path(config.path) / layout.LOCAL_LOCK_FILE, wait=config.lock_wait)
    return LeaseLock(store, layout.LEASE, ttl=config.lock_ttl, wait=config.lock_wait)


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
    lock: object | None = None  # lock.RepoLock | lock.LeaseLock, while this process holds it
    own_running: set[str] = field(default_factory=set)  # backups this process began and has not ended
    _catalog_mutex: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- objects through the pipeline ----------------------------------------------------------

    @property
    def codec(self):
        from hadr_backup.repo.pipeline import Codec

        compression = self.policy.compression
        return Codec(level=compression.level, threads=compression.threads, data_key=self.data_key)

    def put_object(
        self,
        key: str,
        source: Iterable[bytes] | BinaryIO,
        *,
        if_absent: bool = False,
        on_stored: Callable[[int], None] | None = None,
    ) -> StoredObject:
        """Compress, encrypt and store ``source`` under ``key``; return what was stored. ``on_stored(n)``
        is called as each piece of ``n`` encoded bytes goes to the storage (for progress)."""
        from hadr_backup.repo.pipeline import encode

        stream, digest = encode(source, self.codec)
        if on_stored is not None:
            stream = _observed(stream, on_stored)
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

    def read_json_versioned(self, key: str) -> tuple[dict | None, str | None]:
        """A small JSON object and the version token it was read at; (None, None) when there is none."""
        from hadr_backup.repo.pipeline import decode

        try:
            versioned = self.store.get_versioned(key)
        except ObjectMissing:
            return None, None
        return json.loads(b"".join(decode([versioned.data], self._key_for))), versioned.token

    def put_json_if(self, key: str, value: dict, *, token: str | None) -> str:
        """Compare-and-swap a small JSON object (ObjectChanged when its token is no longer ``token``)."""
        return self.store.put_if(key, self._encode_small(json.dumps(value, sort_keys=True).encode()), token=token)

    def _key_for(self, key_id: str):
        if self.data_key is None:
            raise KeyMissing(
                f"this object is encrypted with data key {key_id} and no key is configured",
                hint="set encryption.key_file or encryption.key_env in the policy",
            )
        if self.data_key.id != key_id:
            return load_data_key(self.store, key_id, self.master_key)
        return self.data_key

    # -- catalog -------------------------------------------------------------------------------

    def load_catalog(self) -> None:
        catalog, _tokens, warnings = self._read_catalog()
        if catalog.loaded_from is None:
            self.refuse_if_catalog_lost()
        self.catalog = catalog
        self.warnings.extend(warnings)

    def _read_catalog(self, *, unreadable_ok: bool = False) -> tuple[Catalog, dict[str, str], list[str]]:
        """The catalog (or its copy), and the version tokens of both as they were read. With
        ``unreadable_ok`` a catalog whose two files are both damaged reads as a missing one."""
        from hadr_backup.repo.pipeline import decode

        tokens: dict[str, str] = {}

        def read(key: str) -> bytes | None:
            try:
                versioned = self.store.get_versioned(key)
            except ObjectMissing:
                return None
            tokens[key] = versioned.token
            return b"".join(decode([versioned.data], self._key_for))

        try:
            catalog, warnings = catalog_io.load_catalog(read)
        except IntegrityError as error:
            if not unreadable_ok:
                raise
            catalog, warnings = Catalog(loaded_from=None), [error.message]
        return catalog, tokens, warnings

    def refuse_if_catalog_lost(self) -> None:
        """No catalog: fine for a new repository, an alarm when backups or WAL are stored."""
        for prefix in (layout.BACKUPS, layout.WAL, layout.AOF, layout.CONTENT):
            found = next(iter(self.store.list(prefix)), None)
            if found is not None:
                raise CatalogMissing(
                    f"the repository at {self.store.describe()} holds backups or WAL "
                    f"({found.key}, …) but neither {layout.CATALOG} nor {layout.CATALOG_COPY}",
                    hint="run `hadr repair catalog` to rebuild it from the backups' own "
                    "descriptions; until then nothing is written",
                )

    def update_catalog(
        self,
        change: Callable[[Catalog], T],
        *,
        allow_missing: bool = False,
        lock_lost_ok: bool = False,
        rebuild: bool = False,
    ) -> T:
        """Apply ``change`` to the newest catalog and store it only if nobody changed it meanwhile
        (compare-and-swap); on a conflict re-read and re-apply. ``change`` must be idempotent.
        Refused once this process lost the lock, unless ``lock_lost_ok`` (failing its own backup).
        ``rebuild``: a missing or unreadable catalog starts empty (``hadr repair catalog``)."""
        self._require_write()
        with self._catalog_mutex:
            for attempt in range(CAS_ATTEMPTS):
                if self.lock is not None and not lock_lost_ok:
                    self.lock.check()
                catalog, tokens, _warnings = self._read_catalog(unreadable_ok=rebuild)
                if catalog.loaded_from is None and not (allow_missing or rebuild):
                    self.refuse_if_catalog_lost()
                result = change(catalog)
                data = self._encode_small(catalog.to_bytes())
                try:
                    mine = self.store.put_if(layout.CATALOG, data, token=tokens.get(layout.CATALOG))
                except ObjectChanged:
                    time.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 6)))
                    continue
                self._write_copy(data, mine, tokens.get(layout.CATALOG_COPY))
                self.catalog = catalog
                return result
        raise RepositoryError(
            f"the catalog kept changing under {CAS_ATTEMPTS} attempts to update it",
            hint="another writer is updating it in a loop; look at `hadr info`",
        )

    def _write_copy(self, data: bytes, main_token: str, copy_token: str | None) -> None:
        """The twin follows the newest catalog: when another writer changed it, either we rewrite it
        (our catalog is still the newest) or the newer writer will."""
        for _ in range(CAS_ATTEMPTS):
            try:
                self.store.put_if(layout.CATALOG_COPY, data, token=copy_token)
                return
            except ObjectChanged:
                if self.store.get_versioned(layout.CATALOG).token != main_token:
                    return
                try:
                    copy_token = self.store.get_versioned(layout.CATALOG_COPY).token
                except ObjectMissing:
                    copy_token = None

    def _encode_small(self, data: bytes) -> bytes:
        from hadr_backup.repo.pipeline import encode

        stream, _digest = encode([data], self.codec)
        return b"".join(stream)

    # -- backups (their lifecycle lives in backups.py) -----------------------------------------

    def begin_backup(self, kind: str, source: str, meta: dict | None = None) -> BackupEntry:
        """Record a backup as running (with a heartbeat) before any of its data is stored."""
        return lifecycle.begin_backup(self, kind, source, meta)

    def finish_backup(
        self,
        entry: BackupEntry,
        objects: list[StoredObject],
        meta: dict | None = None,
        *,
        consistent_at: float | None = None,
        needs: list[str] | None = None,
    ) -> None:
        """Describe the backup in the repository, then mark it complete: call only once every
        object it needs (its own, and ``needs`` outside it) is durably stored."""
        entry.consistent_at = consistent_at if consistent_at is not None else entry.consistent_at
        entry.needs = list(needs) if needs is not None else entry.needs
        lifecycle.finish_backup(self, entry, objects, meta)

    def fail_backup(self, entry: BackupEntry, reason: str) -> None:
        """Mark it failed, then remove what it stored (and the leftovers of interrupted writes)."""
        lifecycle.fail_backup(self, entry, reason)

    @contextmanager
    def recording(self, entry: BackupEntry) -> Iterator[BackupEntry]:
        """The block that stores ``entry``'s data: anything it raises (an interruption too) abandons the
        backup, then goes on."""
        try:
            yield entry
        except BaseException as error:
            self.abandon_backup(entry, error)
            raise

    def abandon_backup(self, entry: BackupEntry, error: BaseException) -> None:
        """``fail_backup`` with the error's first line, best effort: the entry never reads complete either
        way, the original error is what the caller raises, and the next writer cleans up."""
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        try:
            self.fail_backup(entry, reason)
        except Exception:
            pass

    def _require_write(self) -> None:
        if not self.writable:
            raise RepositoryError("the repository is open read-only")

    @property
    def encrypted(self) -> bool:
        return bool(self.meta.get("encryption", {}).get("data_key_id"))


# -- keys -----------------------------------------------------------------------------------------


def _observed(stream: Iterable[bytes], on_piece: Callable[[int], None]) -> Iterator[bytes]:
    for piece in stream:
        on_piece(len(piece))
        yield piece


def load_data_key(store: Storage, data_key_id: str, master):
    from hadr_backup.repo.keys import unwrap_data_key

    try:
        record = json.loads(read_all(store, layout.data_key_record(data_key_id)))
    except ObjectMissing:
        raise RepositoryError(
            f"data key {data_key_id} is missing from the repository ({store.describe()})",
            hint="restore keys/ from a copy of the repository",
        ) from None
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
        raise RepositoryNotInitialized(
            f"there is no hadr repository at {store.describe()}", hint="run `hadr init` first"
        ) from None
    except ValueError:
        raise RepositoryError(f"{META_KEY} at {store.describe()} is damaged") from None


# -- opening --------------------------------------------------------------------------------------


@contextmanager
def open_repo(
    policy: Policy, *, write: bool = False, lock: bool | None = None, catalog: bool = True
) -> Iterator[Repository]:
    """Open the repository: read-only by default; ``write`` takes the lock unless ``lock=False``
    (wal-push writes without the lock: each segment is its own atomic, conditional object).
    ``catalog=False`` skips loading the catalog (wal-push and wal-fetch do not need it).

    While the lock is held a keepalive thread renews it (S3 lease) and the heartbeat of the backups
    this process runs; a writer that takes the lock first fails the backups whose heartbeat stopped."""
    take_lock = write if lock is None else lock
    store = make_storage(policy)
    repo_lock = make_lock(policy, store).acquire() if take_lock else None
    keepalive = None
    try:
        repo = _open(policy, store if write else ReadOnlyStorage(store), write, catalog)
        repo.lock = repo_lock
        if repo_lock and repo_lock.previous_holder:
            repo.warnings.append(
                f"took over a stale lock of pid {repo_lock.previous_holder.get('pid')} "
                f"on {repo_lock.previous_holder.get('host')}"
            )
        if take_lock and write and catalog:
            lifecycle.fail_interrupted(repo)
        if repo_lock:
            keepalive = lifecycle.Keepalive(repo, policy.repository.lock_ttl / 3).start()
        yield repo
    finally:
        if keepalive:
            keepalive.stop()
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
            raise KeyMissing(
                f"the repository at {store.describe()} is encrypted (data key {key_id}) and the policy names no key",
                hint="set encryption.key_file or encryption.key_env in the policy",
            )
        repo.master_key = master
        repo.data_key = load_data_key(store, key_id, master)
    elif policy.encryption.enabled:
        raise UsageError(
            f"the policy names an encryption key but the repository at {store.describe()} is not encrypted",
            hint="remove encryption from the policy or use a new repository",
        )
    if catalog:
        repo.load_catalog()
    return repo


def init_repo(policy: Policy) -> tuple[dict, bool]:
    """Create the repository (or check an existing one). Returns (meta, created)."""
    from hadr_backup.repo.keys import new_data_key, wrap_data_key

    store = make_storage(policy, create=True)
    if store.stat(META_KEY) is not None:
        with open_repo(policy) as repo:  # proves the key opens it
            return repo.meta, False
    master = master_key_for(policy)
    meta = {"format": REPO_FORMAT, "id": secrets.token_hex(8), "created_at": time.time(), "encryption": {}}
    if master is not None:
        data_key = new_data_key()
        store.put(
            layout.data_key_record(data_key.id), [json.dumps(wrap_data_key(data_key, master)).encode()], if_absent=True
        )
        meta["encryption"] = {"cipher": "aes-256-gcm", "data_key_id": data_key.id, "master_key_id": master.id}
    store.put(META_KEY, [json.dumps(meta, indent=1).encode()], if_absent=True)
    with open_repo(policy, write=True, catalog=False) as repo:  # an empty catalog: "no backups yet"
        repo.update_catalog(lambda catalog: None, allow_missing=True)
    return meta, True
