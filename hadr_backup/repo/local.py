"""Local filesystem driver: every write is fsutil.durable_write (temp file + fsync + rename + directory
fsync; a hard link instead of the rename for a create-if-absent). Unfinished writes leave temporary
files named ``.<name>.<pid>.<8 hex>.tmp`` (fsutil.TEMP_NAME), which list_temporary() finds.

When run as root on a repository root owned by another user (typically ``postgres``, whose
archive_command writes WAL here), new files and directories take that owner, so a root cron job
never leaves behind files the archiver cannot write next to.

Reads tell "absent" from "could not look": only ENOENT on a path below a repository root that is
still a directory means "not there" (and a dangling symbolic link on the way does not count). Any
other error (EACCES, EIO, ESTALE, ENOTDIR, a vanished root, an unreadable subfolder met while
listing) raises StorageUnreadable, naming the path and the OS cause.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as stat_mode
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from hadr_backup.errors import (
    ObjectChanged,
    ObjectExists,
    ObjectMissing,
    RepositoryError,
    RepositoryWriteFailed,
    StorageUnreadable,
)
from hadr_backup.fsutil import TEMP_NAME, durable_write, fsync_dir, os_fault_hint, os_faults_as
from hadr_backup.repo.storage import Features, ObjectInfo, Versioned, started, validate_key, validate_prefix

READ_SIZE = 1 << 20
CAS_LOCK = ".cas.lock"  # per folder: serialises compare-and-swap writers of that folder's objects


class LocalStorage:
    features = Features(atomic_create=True, durable_put=True, local_path=True)

    def __init__(self, root: str | Path, *, create: bool = False):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise RepositoryError(
                f"repository directory {self.root} does not exist",
                hint="run `hadr init` to create it, or fix repository.path",
            )
        stat = self.root.stat()
        self._owner = (stat.st_uid, stat.st_gid) if os.geteuid() == 0 and stat.st_uid != 0 else None

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _adopt(self, path: Path) -> None:
        if self._owner:
            os.chown(path, *self._owner)

    def _makedirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue
            self._adopt(new)
            fsync_dir(new.parent)

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> int:
        final = self._path(key)
        with self._writing(final):
            self._makedirs(final.parent)
        try:  # an OSError of the source (iterating ``chunks``) is the source's own, not the repository's
            return durable_write(
                final, chunks, mode=None, owner=self._owner, exclusive=if_absent, guard=partial(self._writing, final)
            )
        except FileExistsError:
            raise ObjectExists(f"{key} already exists in {self.root}") from None

    def _writing(self, final: Path):
        """OSErrors of the block (no space, no permission, I/O) as RepositoryWriteFailed naming ``final``."""
        return os_faults_as(RepositoryWriteFailed, f"cannot write {final}", self._write_hint)

    def _write_hint(self, error: OSError) -> str | None:
        return os_fault_hint(
            error,
            self.root,
            space=" (or prune old backups), then retry",
            access="; the repository must be writable for every OS user hadr runs as, and "
            "archive_command runs as the postgres OS user "
            f"(e.g. chown -R postgres: {self.root})",
        )

    def get(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            self._confirm_absent(path, f"read {key}")
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        except OSError as error:
            raise _unreadable(f"read {key}", error) from error
        return _read_chunks(handle, key)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._confirm_absent(path, f"look up {key}")
            return None
        except OSError as error:
            raise _unreadable(f"look up {key}", error) from error
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walked a folder at a time, each folder's entries in key order, so that the walk yields keys
        in exactly the order of a sort of the full keys; everything up to the first object is read
        before this returns."""
        base, entries, action = self._open_prefix(prefix, f"list {prefix or 'the repository'} in {self.root}")
        return started(_walk(entries, base, prefix, action)) if entries is not None else iter(())

    def _open_prefix(self, prefix: str, action: str) -> tuple[str, list[os.DirEntry] | None, str]:
        """(folder of ``prefix`` relative to the root, its entries or None when it proved absent, action)."""
        validate_prefix(prefix)
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        try:
            return base, _scan(start, action), action
        except FileNotFoundError:
            self._confirm_absent(start, action)
            return base, None, action

    def _confirm_absent(self, path: Path, action: str) -> None:
        """``path`` was not found: make sure that is an answer, not a failure to look. The root must
        still be a directory, and no component on the way may be a dangling link."""
        try:
            root = os.stat(self.root)
        except OSError as error:
            raise _unreadable(
                action, error, hint="the repository directory is gone: is its filesystem mounted?"
            ) from error
        if not stat_mode.S_ISDIR(root.st_mode):
            raise StorageUnreadable(f"cannot {action}: the repository root {self.root} is not a directory any more")
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            try:
                os.stat(current)
            except FileNotFoundError as error:
                # a folder another writer creates meanwhile was still absent when looked at
                if os.path.islink(current) and not os.path.exists(current):
                    raise _unreadable(action, error, hint=f"{current} is a link to nothing") from error
                return
            except OSError as error:
                raise _unreadable(action, error) from error

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._writing(path):
            try:
                path.unlink()
            except FileNotFoundError:
                return
            fsync_dir(path.parent)

    # -- compare-and-swap and leftovers ---------------------------------------------------------

    def get_versioned(self, key: str) -> Versioned:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                return Versioned(handle.read(), _token(os.fstat(handle.fileno())))
        except FileNotFoundError:
            self._confirm_absent(path, f"read {key}")
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        except OSError as error:
            raise _unreadable(f"read {key}", error) from error

    def put_if(self, key: str, data: bytes, *, token: str | None) -> str:
        final = self._path(key)
        self._makedirs(final.parent)
        with self._folder_lock(final.parent):
            if self._current_token(final) != token:
                raise ObjectChanged(f"{key} in {self.root} changed since it was read")
            self.put(key, [data])
            return _token(final.stat())

    def delete_if(self, key: str, token: str) -> None:
        final = self._path(key)
        if not final.parent.is_dir():
            raise ObjectChanged(f"{key} in {self.root} is gone")
        with self._folder_lock(final.parent):
            if self._current_token(final) != token:
                raise ObjectChanged(f"{key} in {self.root} changed since it was read")
            self.delete(key)

    @contextmanager
    def _folder_lock(self, folder: Path) -> Iterator[None]:
        fd = os.open(folder / CAS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if self._owner:
                os.fchown(fd, *self._owner)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _current_token(self, path: Path) -> str | None:
        try:
            return _token(path.stat())
        except FileNotFoundError:
            return None

    def list_temporary(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base, entries, action = self._open_prefix(
            prefix, f"list leftovers under {prefix or 'the repository'} in {self.root}"
        )
        if entries is not None:
            yield from _temporaries(entries, base, prefix, action)

    def delete_temporary(self, info: ObjectInfo) -> None:
        if not info.temp_id or not TEMP_NAME.fullmatch(os.path.basename(info.temp_id)):
            raise RepositoryError(f"{info.temp_id!r} is not a temporary object of {self.root}")
        path = self.root / info.temp_id
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)


def _token(st: os.stat_result) -> str:
    """A file's version: a replaced file is a new inode with a new change time."""
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _read_chunks(handle, key: str) -> Iterator[bytes]:
    with handle:
        while True:
            try:
                chunk = handle.read(READ_SIZE)
            except OSError as error:
                raise _unreadable(f"read {key}", error) from error
            if not chunk:
                return
            yield chunk


def _temporaries(entries: list[os.DirEntry], rel_dir: str, prefix: str, action: str) -> Iterator[ObjectInfo]:
    """Temp files of unfinished puts under a scanned folder, for keys starting with ``prefix``."""
    for entry in entries:
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        if entry.is_dir(follow_symlinks=False):
            if rel.startswith(prefix) or prefix.startswith(rel + "/"):
                yield from _temporaries(_scan(Path(entry.path), action), rel, prefix, action)
            continue
        match = TEMP_NAME.fullmatch(entry.name)
        key = match and (f"{rel_dir}/{match['name']}" if rel_dir else match["name"])
        if key and key.startswith(prefix):
            st = _entry_stat(entry, action)
            if st is not None:
                yield ObjectInfo(key, st.st_size, st.st_mtime, temp_id=rel)


def _walk(entries: list[os.DirEntry], rel_dir: str, prefix: str, action: str) -> Iterator[ObjectInfo]:
    """The objects under a scanned folder in key order, reading a subfolder only when the walk gets
    there; a subfolder that cannot be read raises."""
    for key, entry, st in _in_key_order(entries, rel_dir, prefix, action):
        if not stat_mode.S_ISDIR(st.st_mode):
            yield ObjectInfo(key, st.st_size, st.st_mtime)
            continue
        try:
            inner = _scan(Path(entry.path), action)
        except FileNotFoundError as error:  # listed a moment ago: something is wrong underneath
            raise _unreadable(action, error) from error
        yield from _walk(inner, key, prefix, action)


def _in_key_order(
    entries: list[os.DirEntry], rel_dir: str, prefix: str, action: str
) -> list[tuple[str, os.DirEntry, os.stat_result]]:
    """(key, entry, stat) of a folder's objects and subfolders under ``prefix``, in the order of their
    keys: every key in subfolder ``x`` continues ``x/``, so it sorts as ``x/`` does (``x-1`` before
    ``x/a``, as in a sort of full keys). Hidden entries (temp files, locks) are no objects."""
    found = []
    for entry in entries:
        key = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        if entry.name.startswith(".") or not key.startswith(prefix):
            continue
        st = _entry_stat(entry, action)
        if st is not None:  # else deleted meanwhile
            found.append((entry.name + "/" if stat_mode.S_ISDIR(st.st_mode) else entry.name, key, entry, st))
    found.sort(key=lambda item: item[0])
    return [(key, entry, st) for _, key, entry, st in found]


def _scan(folder: Path, action: str) -> list[os.DirEntry]:
    """The entries of ``folder``; FileNotFoundError passes (the caller decides what it means), any
    other error raises StorageUnreadable."""
    try:
        with os.scandir(folder) as scan:
            return list(scan)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _unreadable(action, error) from error


def _entry_stat(entry: os.DirEntry, action: str) -> os.stat_result | None:
    """The entry's stat (through links), None when it was removed meanwhile; a link to nothing raises."""
    try:
        return entry.stat()
    except FileNotFoundError as error:
        if os.path.lexists(entry.path):
            raise _unreadable(action, error, hint=f"{entry.path} is a link to nothing") from error
        return None
    except OSError as error:
        raise _unreadable(action, error) from error


def _unreadable(action: str, error: OSError, hint: str | None = None) -> StorageUnreadable:
    where = f" {error.filename}" if error.filename else ""
    cause = error.strerror or str(error)
    name = errno.errorcode.get(error.errno or 0, "")
    return StorageUnreadable(
        f"cannot {action}:{where}: {cause}" + (f" ({name})" if name else ""),
        hint=hint
        or "hadr cannot tell what the repository holds there; fix access to it "
        "(permissions, mount, disk) and try again",
    )
