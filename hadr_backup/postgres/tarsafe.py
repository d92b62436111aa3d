"""Safe extraction of a tar stream into a directory (the stream itself is read by ``tarstream``).

Kept instead of ``tarfile.open(mode="r|")`` with PEP 706's ``filter="data"`` because it is measurably faster
and safer (``bench/bench_tar.py``, docs/BENCHMARKS.md). Faster: restoring the pgbench scale-50 base backup
(808 MB of tar, files fsynced, 2 cores, Python 3.11.7), the extraction alone takes 0.97 s wall / 0.75 s CPU
here against 2.19 s / 1.67 s for tarfile given the same durability and ownership, and the whole restore
1.10 s against 2.00 s (medians of 3). Safer: on Python before 3.11.13 / 3.12.11 / 3.13.4 the data filter
writes outside the target through a chain of symbolic links longer than PATH_MAX (CVE-2025-4517; the case
``path_max_escape`` in tests/unit/test_tarsafe.py), Debian 12's Python 3.11.2 has no filter at all, and the
filter accepts what a data directory never holds: absolute names (stripped), a member twice (overwritten), a
directory or link where an earlier member is (skipped silently), a file written through an earlier link.

Only regular files, directories, symbolic links and hard links are accepted. Extraction
refuses absolute paths, ``..``, links that lead outside the target directory, writing through a link,
device files, and members that collide with one extracted before them (UnsafeArchive, never a bare
OSError); it never follows a symlink while creating a file. Data is copied in the pieces it
arrives in, without building the archive (or a member) in memory.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hadr_backup.fsutil import fsync_dir
from hadr_backup.postgres.tarstream import (  # noqa: F401  (TarScanner is part of this module's API)
    DIRECTORY,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Member,
    TarScanner,
    UnsafeArchive,
    _Feed,
    iter_members,
    normalise,
)

# what the filesystem says when a member collides with an entry extracted before it: a file where a
# directory is needed, a name taken, a dangling link in the path
_CLASHES = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP}


@dataclass
class ExtractStats:
    files: int = 0
    directories: int = 0
    links: int = 0
    bytes: int = 0
    names: set[str] = field(default_factory=set)


def safe_name(name: str) -> str:
    """The member name as a relative path, or UnsafeArchive when it could escape the target."""
    if "\0" in name or not name:
        raise UnsafeArchive(f"tar member {name!r} has an empty or binary name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"tar member {name!r} has an absolute path")
    clean = normalise(name)
    parts = clean.split("/")
    if ".." in parts:
        raise UnsafeArchive(f"tar member {name!r} contains '..'")
    return "/".join(p for p in parts if p not in ("", "."))


def _link_inside(member_name: str, target: str, *, hard: bool) -> str:
    """The link's target relative to the extraction root, or UnsafeArchive when it could point outside.

    Targets with ``..`` are refused outright: resolved through other links (``a -> b/..`` with
    ``b -> .``) they can climb out of the root even when they look harmless written out.
    """
    if not target:
        raise UnsafeArchive(f"tar member {member_name!r} is a link with an empty target")
    if target.startswith("/"):
        raise UnsafeArchive(f"tar member {member_name!r} links to the absolute path {target!r}")
    if ".." in target.split("/"):
        raise UnsafeArchive(
            f"tar member {member_name!r} links outside the target directory ({target!r}: "
            f"link targets with '..' are refused)"
        )
    base = "" if hard else posixpath.dirname(member_name)
    return posixpath.normpath(posixpath.join(base, target))


class SafeExtractor:
    """Writes members under ``root`` (which must exist), refusing anything that escapes it."""

    def __init__(self, root: Path, *, owner: tuple[int, int] | None = None, durable: bool = False):
        self.root = Path(root)
        self.real_root = os.path.realpath(root)
        self.owner = owner
        self.durable = durable  # fsync every file (on a thread, while the next ones are written) and directory
        self.stats = ExtractStats()
        self._syncer: _Syncer | None = None
        self._directories: set[str] = {str(self.root)}

    def extract(self, chunks: Iterable[bytes]) -> ExtractStats:
        feed = _Feed(chunks)
        self._syncer = _Syncer() if self.durable else None
        try:
            for member, body in iter_members(feed):
                self._one(member, body)
            if feed.drain():
                raise UnsafeArchive("the tar stream has data after its end-of-archive blocks")
        finally:
            if self._syncer is not None:
                self._syncer.finish()
        if self.durable:
            for directory in sorted(self._directories, key=len, reverse=True):
                fsync_dir(directory)
        return self.stats

    def _one(self, member: Member, body: Iterator[memoryview]) -> None:
        try:
            self._write(member, body)
        except OSError as error:
            if error.errno not in _CLASHES:  # a full disk or an I/O error is not the archive's doing
                raise
            raise UnsafeArchive(
                f"tar member {member.name!r} clashes with an entry extracted before it ({error.strerror})"
            ) from error

    def _write(self, member: Member, body: Iterator[memoryview]) -> None:
        relative = safe_name(member.name)
        if not relative:
            return  # the root itself
        if relative in self.stats.names and member.type != DIRECTORY:
            raise UnsafeArchive(f"tar member {member.name!r} appears twice")
        path = self._parent_checked(relative)
        self._ensure_parent(relative)
        kind = member.type
        if kind in (REGULAR, b"\0", b"7"):
            self._file(path, member, body)
        elif kind == DIRECTORY:
            self._directory(path, member)
        elif kind == SYMLINK:
            _link_inside(relative, member.linkname, hard=False)
            os.symlink(member.linkname, path)
            self._chown(path, follow=False)
            self.stats.links += 1
        elif kind == HARDLINK:
            source = self._parent_checked(safe_name(_link_inside(relative, member.linkname, hard=True)))
            if os.path.islink(source) or not os.path.isfile(source):
                raise UnsafeArchive(
                    f"tar member {member.name!r} is a hard link to {member.linkname!r}, "
                    f"which is not a file extracted before it"
                )
            os.link(source, path, follow_symlinks=False)
            self.stats.links += 1
        else:
            raise UnsafeArchive(
                f"tar member {member.name!r} has type {kind!r}, which a data directory "
                f"never holds (device, fifo or unknown)"
            )
        self.stats.names.add(relative)

    def _parent_checked(self, relative: str) -> str:
        """Absolute path for ``relative`` whose parent resolves inside the root (no symlink detours)."""
        path = os.path.join(self.root, relative)
        parent = os.path.realpath(os.path.dirname(path))
        if parent != self.real_root and not parent.startswith(self.real_root + os.sep):
            raise UnsafeArchive(
                f"tar member {relative!r} would be written through a link that leaves the target directory"
            )
        return path

    def _ensure_parent(self, relative: str) -> None:
        missing, parent = [], posixpath.dirname(relative)
        while parent and not os.path.isdir(os.path.join(self.root, parent)):
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for directory in reversed(missing):
            path = self._parent_checked(directory)
            os.mkdir(path, 0o700)
            self._chown(path, follow=False)

    def _file(self, path: str, member: Member, body: Iterator[memoryview]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o600)  # never over an existing entry, never through a link
        try:
            for piece in body:
                while piece:
                    written = _write(fd, piece, path)
                    piece = piece[written:]
            os.fchmod(fd, _file_mode(member.mode))
            if self.owner:
                os.fchown(fd, *self.owner)
        except BaseException:
            os.close(fd)
            raise
        if self._syncer is not None:
            self._syncer.submit(fd)  # fsynced and closed on the syncer's thread
        else:
            os.close(fd)
        self._directories.add(os.path.dirname(path))
        self.stats.files += 1
        self.stats.bytes += member.size

    def _directory(self, path: str, member: Member) -> None:
        if os.path.islink(path):
            raise UnsafeArchive(f"tar member {member.name!r} is a directory where a link was extracted")
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, _file_mode(member.mode) | stat.S_IRWXU)
        self._directories.update((path, os.path.dirname(path)))
        self._chown(path, follow=False)
        self.stats.directories += 1

    def _chown(self, path: str, *, follow: bool) -> None:
        if self.owner:
            os.chown(path, *self.owner, follow_symlinks=follow)


def _write(fd: int, data: memoryview, path: str) -> int:
    try:
        return os.write(fd, data)
    except OSError as error:  # os.write names no file: say which one the disk refused
        raise OSError(error.errno, error.strerror, path) from error


def _file_mode(mode: int) -> int:
    return mode & 0o777  # never setuid/setgid/sticky from an archive


class _Syncer:
    """fsync()s and closes file descriptors on a thread of its own (fsync releases the GIL)."""

    def __init__(self, depth: int = 64):
        import queue
        import threading

        self._queue: queue.Queue[int | None] = queue.Queue(maxsize=depth)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="hadr-fsync", daemon=True)
        self._thread.start()

    def submit(self, fd: int) -> None:
        if self._error is not None:
            os.close(fd)
            raise self._error
        self._queue.put(fd)

    def _run(self) -> None:
        while (fd := self._queue.get()) is not None:
            try:
                if self._error is None:
                    os.fsync(fd)
            except OSError as error:
                self._error = error
            finally:
                os.close(fd)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
