"""wal-push and wal-fetch: PostgreSQL's archive_command and restore_command.

The contract (PostgreSQL "Continuous Archiving", pgBackRest archive-push/get):

* wal-push succeeds only once the file is durably stored (the storage driver fsyncs and renames, or
  gets a confirmed PUT). The object key carries the SHA-256 of the plaintext, so an identical re-push
  is recognised from a listing and succeeds; different content under a stored name fails and
  changes nothing. ``.history`` files fall under the same rule, so they are never overwritten;
  ``.partial`` files are stored under their own name.
* The archive of a source is bound to one cluster: ``wal/<source>/archive.json`` records the system
  identifier, segment size and WAL page magic (the major version) of the first segment pushed, and
  every segment's header is checked against it.
* A WAL file can be read again, so an upload that failed transiently (throttling, 5xx, a refused
  connection, a timeout) is retried here, the whole push again, with exponential backoff and jitter
  within the policy's ``repository.retry``; a retry is safe, as a stored twin is recognised and the
  object is created only if absent. Permanent failures (denied access, conflicts, foreign WAL) are not
  retried.
* wal-fetch writes the file to a temporary name, checks its SHA-256, fsyncs and renames it into
  place. It reports "absent" (exit 1) only when a listing confirmed that the repository does not
  hold the name and the repository (``hadr.repo.json``) and the source's archive (its identity)
  are still there; a listing that could not look, and any other failure, after retries, raise
  ``WalFetchFailed`` (exit 200, which PostgreSQL treats as fatal) so that recovery stops instead of
  ending early.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadr_backup.errors import (
    HadrError,
    IntegrityError,
    KeyMissing,
    LocalFileError,
    ObjectExists,
    ObjectMissing,
    RepositoryError,
    StorageUnreadable,
    TransientStorageError,
    UsageError,
    WrongKey,
)
from hadr_backup.fsutil import durable_write, os_faults_as
from hadr_backup.policy.load import load_policy
from hadr_backup.postgres import wal
from hadr_backup.postgres.background import ack_command, hadr_argv
from hadr_backup.repo.repository import META_KEY, open_repo
from hadr_backup.repo.storage import Backoff, retry_transient
from hadr_backup.ui import plural

if TYPE_CHECKING:
    from hadr_backup.policy.model import Policy, RetryConfig
    from hadr_backup.repo.repository import Repository

# > 125 makes PostgreSQL abort recovery; 126/127 would be logged as "command not executable/not
# found" and 129-192 look like "killed by signal N" to a shell, so a code outside both ranges
EXIT_FETCH_FAILED = 200
READ_WHOLE_LIMIT = 64 << 20  # WAL files up to this size are read once into memory


class WalConflict(HadrError):
    """A WAL file with the same name and different content is already archived."""


class ForeignWal(HadrError):
    """The WAL file belongs to another cluster than the archive."""


class WalPushFailed(HadrError):
    """A WAL file could not be stored; PostgreSQL keeps it and calls archive_command again."""


class ArchiveMissing(RepositoryError):
    """The source has no archive in the repository (nothing was archived, or the archive is gone)."""


class WalFetchFailed(HadrError):
    """A WAL file could not be fetched; recovery must stop rather than end early."""

    exit_code = EXIT_FETCH_FAILED


# -- commands for postgresql.conf ----------------------------------------------------------------


def hadr_command(policy_path: str | os.PathLike, source: str, *args: str) -> str:
    return shlex.join(hadr_argv(policy_path, *args, "--source", source))


def archive_command_for(policy_path: str | os.PathLike, source: str) -> str:
    """The archive_command for ``source`` (read from the policy file, which must exist): ``hadr
    wal-push %p``, behind a cheap "already stored?" answer in async mode (background.ack_command)."""
    command = f"{hadr_command(policy_path, source, 'wal-push')} %p"
    policy = load_policy(str(policy_path))
    postgres = policy.sources.postgres_named(source)
    return ack_command(policy, postgres, command) if postgres.async_archive else command


def restore_command_for(policy_path: str | os.PathLike, source: str) -> str:
    """The restore_command for ``source``: ``hadr wal-fetch %f %p`` (prefetching the next segments)."""
    return f"{hadr_command(policy_path, source, 'wal-fetch')} %f %p"


# -- archive identity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveIdentity:
    system_identifier: int
    segment_size: int
    page_magic: int
    pg_version: int | None
    block_size: int

    @classmethod
    def of(cls, header: wal.SegmentHeader) -> ArchiveIdentity:
        return cls(
            header.system_identifier, header.segment_size, header.page_magic, header.pg_version, header.block_size
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ArchiveIdentity:
        return cls(
            int(data["system_identifier"]),
            int(data["segment_size"]),
            int(data["page_magic"]),
            data.get("pg_version"),
            int(data.get("block_size", wal.XLOG_BLCKSZ)),
        )

    def describe(self) -> str:
        version = f"PostgreSQL {self.pg_version}" if self.pg_version else f"WAL magic {self.page_magic:#06x}"
        return f"system identifier {self.system_identifier} ({version}, {self.segment_size >> 20} MiB segments)"


def load_identity(repo: Repository, source: str) -> ArchiveIdentity | None:
    try:
        return ArchiveIdentity.from_json(repo.read_json(wal.archive_info_key(source)))
    except ObjectMissing:
        return None


def bind_identity(repo: Repository, source: str, found: ArchiveIdentity, name: str) -> ArchiveIdentity:
    """Check ``found`` against the archive's identity, recording it on the first push."""
    recorded = load_identity(repo, source)
    if recorded is None:
        try:
            repo.put_json(wal.archive_info_key(source), {**found.to_json(), "created_at": time.time()}, if_absent=True)
            return found
        except ObjectExists:  # another pusher recorded it first
            recorded = load_identity(repo, source)
    if recorded is None or (recorded.system_identifier, recorded.segment_size, recorded.page_magic) != (
        found.system_identifier,
        found.segment_size,
        found.page_magic,
    ):
        raise ForeignWal(
            f"refusing {name}: it comes from the cluster with {found.describe()}, but the archive "
            f"of source {source!r} belongs to the cluster with "
            f"{recorded.describe() if recorded else 'an unreadable identity'}",
            hint="each cluster needs its own source name (or repository); after initdb or "
            "pg_upgrade, archive under a new source name",
        )
    return recorded


# -- wal-push ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalFile:
    """A WAL file about to be pushed: its name, content hash and (for segments) header."""

    path: Path
    name: str
    size: int
    sha256: str
    header: wal.SegmentHeader | None
    data: bytes | None  # the content, when small enough to keep

    def chunks(self) -> Iterable[bytes]:
        if self.data is not None:
            return [self.data]
        from hadr_backup.repo.pipeline import open_source

        return open_source(self.path)


def read_wal_file(path: str | os.PathLike) -> WalFile:
    """Read and hash a WAL file, checking that a segment's header matches its name."""
    path = Path(path)
    name = path.name
    if not wal.is_wal_file(name):
        raise UsageError(
            f"{path} is not a WAL file (expected a name such as 000000010000000000000001, "
            f"00000002.history or ….partial)",
            hint="archive_command must pass %p",
        )
    unreadable = f"cannot read WAL file {path}"
    with os_faults_as(LocalFileError, unreadable), open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data, sha = _read_and_hash(handle, size)
    header = None
    if wal.is_segment(name) or wal.is_partial(name):
        with os_faults_as(LocalFileError, unreadable):
            first = data[: wal.SEGMENT_HEADER_SIZE] if data is not None else _head(path)
        try:
            header = wal.read_segment_header(first)
        except wal.WalNameError as error:
            raise IntegrityError(f"{path} is not a PostgreSQL WAL segment: {error}") from error
        _check_segment(path, name, size, header)
    return WalFile(path, name, size, sha, header, data)


def _read_and_hash(handle, size: int) -> tuple[bytes | None, str]:
    if size <= READ_WHOLE_LIMIT:
        data = handle.read()
        return data, hashlib.sha256(data).hexdigest()
    sha = hashlib.sha256()
    while block := handle.read(1 << 20):
        sha.update(block)
    return None, sha.hexdigest()


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(wal.SEGMENT_HEADER_SIZE)


def _check_segment(path: Path, name: str, size: int, header: wal.SegmentHeader) -> None:
    expected = wal.segment_start_lsn(name, header.segment_size)
    if header.page_address != expected:
        raise IntegrityError(
            f"{path} does not hold segment {name[:24]}: its first page is at LSN "
            f"{wal.format_lsn(header.page_address)}, not {wal.format_lsn(expected)}"
        )
    if wal.is_segment(name) and size != header.segment_size:
        raise IntegrityError(
            f"{path} is {size} bytes but its header says segments are "
            f"{header.segment_size} bytes: the file is incomplete"
        )


def stored_versions(store, source: str, name: str) -> list[wal.ArchivedFile]:
    """Every stored version of exactly ``name`` (a listing, so absence is confirmed)."""
    found = []
    for info in store.list(wal.wal_name_prefix(source, name)):
        parsed = wal.parse_wal_key(info.key)
        if parsed and parsed[0] == source and parsed[1] == name:
            found.append(wal.ArchivedFile(name, info.key, parsed[2], info.size, info.mtime))
    return found


@dataclass
class PushOutcome:
    name: str
    key: str
    sha256: str
    raw_size: int
    stored_size: int
    already_archived: bool
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def push_wal_file(
    repo: Repository, source: str, wal_file: WalFile, *, identity: ArchiveIdentity | None = None
) -> PushOutcome:
    """Store one WAL file; durable when this returns. ``identity``: already checked for this run."""
    if wal_file.header is not None:
        found = ArchiveIdentity.of(wal_file.header)
        if identity is None or identity != found:
            bind_identity(repo, source, found, wal_file.name)
    key = wal.wal_object_key(source, wal_file.name, wal_file.sha256)
    for version in stored_versions(repo.store, source, wal_file.name):
        if version.sha256 == wal_file.sha256:
            return PushOutcome(wal_file.name, version.key, wal_file.sha256, wal_file.size, version.size, True)
        raise WalConflict(
            f"{wal_file.name} is already archived for source {source!r} with different "
            f"content: archived SHA-256 {version.sha256}, this file's {wal_file.sha256}; "
            f"nothing was changed",
            hint="a cluster whose WAL diverged (a clone or a restored copy) is archiving into "
            "this source; give it its own source name or repository",
        )
    try:
        stored = repo.put_object(key, wal_file.chunks(), if_absent=True)
    except ObjectExists:  # a concurrent push of the same content won the race
        return PushOutcome(wal_file.name, key, wal_file.sha256, wal_file.size, 0, True)
    return PushOutcome(wal_file.name, key, wal_file.sha256, wal_file.size, stored.stored_size, False)


def push_retrying(
    push: Callable[[], PushOutcome],
    retry: RetryConfig,
    name: str,
    where: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[TransientStorageError, float], None] | None = None,
) -> PushOutcome:
    """Run ``push`` (one whole push of WAL file ``name``; safe to repeat) again after transient failures,
    within ``retry``; WalPushFailed names the cause when they outlast it."""
    started, retries = time.monotonic(), []

    def note(error: TransientStorageError, delay: float) -> None:
        retries.append(error)
        if on_retry is not None:
            on_retry(error, delay)

    try:
        outcome = retry_transient(
            push, Backoff(retry.attempts, max_seconds=retry.max_seconds), sleep=sleep, on_retry=note
        )
    except TransientStorageError as error:
        hint = (
            (f"{error.hint}; " if error.hint else "")
            + "PostgreSQL keeps the file and runs archive_command again; to ride out longer outages raise "
            "repository.retry (attempts, max_seconds) in the policy"
        )
        raise WalPushFailed(
            f"could not store {name} in {where}: {error.message} (gave up after "
            f"{plural(len(retries) + 1, 'attempt')} in {time.monotonic() - started:.1f} s; "
            f"repository.retry allows {retry.attempts} in {retry.max_seconds:g}s)",
            hint=hint,
        ) from error
    outcome.attempts = len(retries) + 1
    return outcome


@dataclass
class WalPushResult:
    source: str
    name: str
    status: str  # stored | already archived | stored earlier (async)
    key: str
    sha256: str
    raw_size: int
    stored_size: int
    seconds: float
    also_pushed: list[str]  # async mode: other ready files this call stored
    attempts: int = 1  # tries this call made (more than one after transient storage failures)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, out) -> None:
        extra = f", and {plural(len(self.also_pushed), 'more ready file')}" if self.also_pushed else ""
        tries = f", {self.attempts} attempts" if self.attempts > 1 else ""
        out.line(
            f"{self.name}: {self.status} ({self.raw_size} bytes -> {self.stored_size} stored, "
            f"{self.seconds:.2f}s{tries}){extra}"
        )


def push_opening_repo(policy: Policy, source: str, wal_file: WalFile) -> PushOutcome:
    """Open the repository and push ``wal_file``, both again after a transient failure."""

    def push() -> PushOutcome:
        with open_repo(policy, write=True, lock=False, catalog=False) as repo:
            return push_wal_file(repo, source, wal_file)

    return push_retrying(push, policy.repository.retry, wal_file.name, policy.repository.display)


# -- wal-fetch -----------------------------------------------------------------------------------


@dataclass
class WalFetchResult:
    source: str
    name: str
    dest: str
    status: str  # fetched | prefetched | absent
    size: int | None = None  # None: absent
    sha256: str | None = None  # None: absent, or served by the prefetcher (checked when it fetched)
    attempts: int = 1
    warning: str | None = None  # e.g. why the prefetcher was not started

    @property
    def found(self) -> bool:
        return self.status != "absent"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, out) -> None:
        if self.found:
            out.line(f"{self.name}: {self.status} into {self.dest} ({self.size} bytes)")
        else:
            out.line(f"{self.name}: not in the archive of source {self.source!r}")
        if self.warning:
            out.line(f"warning: {self.warning}")


def fetch_wal_file(repo: Repository, source: str, name: str, dest: Path) -> WalFetchResult:
    """Fetch ``name`` into ``dest`` once (no retries); "absent" only on a confirmed absence."""
    versions = stored_versions(repo.store, source, name)
    if not versions:
        confirm_archive_present(repo, source)
        return WalFetchResult(source, name, str(dest), "absent")
    if len({v.sha256 for v in versions}) > 1:
        raise IntegrityError(
            f"the archive of source {source!r} holds {len(versions)} different versions of "
            f"{name} ({', '.join(v.sha256[:12] for v in versions)}): refusing to guess",
            hint="remove the version that does not belong to this cluster's history",
        )
    version = versions[0]
    size = write_verified(repo.read_object(version.key), dest, version.sha256, name)
    return WalFetchResult(source, name, str(dest), "fetched", size, version.sha256)


def confirm_archive_present(repo: Repository, source: str) -> None:
    """An empty listing answers "absent" only while the repository and the source's archive are there:
    an unmounted (empty) mount point or a removed archive lists as empty too."""
    if repo.store.stat(META_KEY) is None:
        raise StorageUnreadable(
            f"{META_KEY} is gone from {repo.store.describe()}: the repository is not there any more",
            hint="is the repository's filesystem mounted?",
        )
    if repo.store.stat(wal.archive_info_key(source)) is None:
        raise ArchiveMissing(
            f"nothing was ever archived for source {source!r} in {repo.store.describe()}, "
            f"or the archive is gone ({wal.archive_info_key(source)} is missing)",
            hint="check the source name in restore_command and the repository it points to",
        )


def write_verified(
    chunks: Iterable[bytes],
    dest: Path,
    sha256: str,
    name: str,
    *,
    owner: tuple[int, int] | None = None,
    sync: bool = True,
) -> int:
    """Write ``chunks`` to ``dest`` (fsutil.durable_write; ``sync=False`` for scratch copies) only if their
    SHA-256 is ``sha256``: a damaged copy never takes the name."""
    return durable_write(dest, _checked(chunks, sha256, name), mode=None, owner=owner, sync=sync)


def _checked(chunks: Iterable[bytes], sha256: str, name: str) -> Iterator[bytes]:
    """``chunks``, then IntegrityError (before durable_write renames anything) when they are not ``sha256``."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != sha256:
        raise IntegrityError(
            f"{name} from the archive has SHA-256 {digest.hexdigest()}, but it was stored "
            f"with {sha256}: the archived copy is damaged"
        )


def fetch_with_retries(
    policy: Policy, source: str, name: str, dest: Path, attempts: int, retry_delay: float
) -> WalFetchResult:
    """Fetch ``name`` into ``dest``, ``attempts`` times at most; any failure but a confirmed absence raises
    WalFetchFailed."""
    failure: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            with open_repo(policy, catalog=False) as repo:
                result = fetch_wal_file(repo, source, name, dest)
            result.attempts = attempt
            return result
        except (WrongKey, KeyMissing, TransientStorageError) as error:
            failure = error  # no retry makes a key right; transient errors were retried by the driver
            break
        except Exception as error:  # network, storage, damage: anything but a confirmed absence
            failure = error
            if attempt < attempts:
                time.sleep(retry_delay * 2 ** (attempt - 1))
    hint = "recovery stops here instead of ending early; fix the cause and start the server again"
    cause_hint = getattr(failure, "hint", None)
    raise WalFetchFailed(
        f"could not fetch {name} from the archive of source {source!r}: {getattr(failure, 'message', None) or failure}",
        hint=f"{cause_hint}; {hint}" if cause_hint else hint,
    )
