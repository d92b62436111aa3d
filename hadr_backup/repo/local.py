"""Local filesystem driver: temp file + fsync + rename (+ directory fsync) for every write.

When run as root on a repository root owned by another user (typically ``postgres``, whose
archive_command writes WAL here), new files and directories take that owner, so a root cron job
never leaves behind files the archiver cannot write next to.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hadr_backup.errors import ObjectChanged, ObjectExists, ObjectMissing, RepositoryError, RepositoryWriteFailed
from hadr_backup.fsutil import fsync_dir, os_fault_hint, os_faults_as
from hadr_backup.repo.storage import Features, ObjectInfo, Versioned, validate_key, validate_prefix

READ_SIZE = 1 << 20
CAS_LOCK = ".cas.lock"  # per folder: serialises compare-and-swap writers of that folder's objects
# the temporary file of an unfinished put: .<name>.<pid>.<8 hex>.tmp
_TEMP = re.compile(r"\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.tmp")


class LocalStorage:
    features = Features(atomic_create=True, durable_put=True, local_path=True)

    def __init__(self, root: str | Path, *, create: bool = False):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise RepositoryError(f"repository directory {self.root} does not exist",
                                  hint="run `hadr init` to create it, or fix repository.path")
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
        temp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            with self._writing(final):
                self._makedirs(final.parent)
                out = open(temp, "xb", buffering=0)  # unbuffered: nothing left to flush once a write failed
            with out:
                size = self._write_all(out, chunks, final)
            with self._writing(final):
                self._adopt(temp)
                if if_absent:
                    try:
                        os.link(temp, final)  # atomic create: fails when the name exists
                    except FileExistsError:
                        raise ObjectExists(f"{key} already exists in {self.root}") from None
                    os.unlink(temp)
                else:
                    os.replace(temp, final)
                fsync_dir(final.parent)
        finally:
            if temp.exists():
                temp.unlink()
        return size

    def _write_all(self, out, chunks: Iterable[bytes], final: Path) -> int:
        size = 0
        for chunk in chunks:  # an OSError of the source is the source's own, not the repository's
            view = memoryview(chunk)
            with self._writing(final):
                while view:  # an unbuffered write may be short
                    view = view[out.write(view):]
            size += len(chunk)
        with self._writing(final):
            os.fsync(out.fileno())
        return size

    def _writing(self, final: Path):
        """OSErrors of the block (no space, no permission, I/O) as RepositoryWriteFailed naming ``final``."""
        return os_faults_as(RepositoryWriteFailed, f"cannot write {final}", self._write_hint)

    def _write_hint(self, error: OSError) -> str | None:
        return os_fault_hint(error, self.root, space=" (or prune old backups), then retry",
                             access="; the repository must be writable for every OS user hadr runs as, and "
                                    "archive_command runs as the postgres OS user "
                                    f"(e.g. chown -R postgres: {self.root})")

    def get(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        return _read_chunks(handle)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        found = []
        for directory, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel_dir = os.path.relpath(directory, self.root)
            for name in files:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    try:
                        st = os.stat(os.path.join(directory, name))
                    except FileNotFoundError:
                        continue
                    found.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return iter(sorted(found, key=lambda info: info.key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)


    # -- compare-and-swap and leftovers ---------------------------------------------------------

    def get_versioned(self, key: str) -> Versioned:
        try:
            with open(self._path(key), "rb") as handle:
                return Versioned(handle.read(), _token(os.fstat(handle.fileno())))
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.root}") from None

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
        validate_prefix(prefix)
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        for directory, _dirs, files in os.walk(start):
            rel_dir = os.path.relpath(directory, self.root)
            for name in files:
                match = _TEMP.fullmatch(name)
                key = match and (match["name"] if rel_dir == "." else f"{rel_dir}/{match['name']}")
                if not key or not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue
                temp = name if rel_dir == "." else f"{rel_dir}/{name}"
                yield ObjectInfo(key, st.st_size, st.st_mtime, temp_id=temp)

    def delete_temporary(self, info: ObjectInfo) -> None:
        if not info.temp_id or not _TEMP.fullmatch(os.path.basename(info.temp_id)):
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




def _read_chunks(handle) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(READ_SIZE):
            yield chunk

