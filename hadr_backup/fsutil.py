"""Durability helpers shared by every writer of local files, and how their OS faults read."""

from __future__ import annotations

import errno
import os
import pwd
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from hadr_backup.errors import HadrError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_PERMISSION = (errno.EACCES, errno.EPERM)
# the temporary name of a file that durable_write has not finished: .<name>.<pid>.<8 hex>.tmp
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.tmp")


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory, so that a rename or a new name in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:  # some filesystems refuse fsync on directories
        if error.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def temp_name(name: str) -> str:
    """The name under which durable_write writes ``name`` before renaming it (matches TEMP_NAME)."""
    return f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def durable_write(
    path: str | os.PathLike,
    data: bytes | Iterable[bytes],
    *,
    mode: int | None = 0o600,
    owner: tuple[int, int] | None = None,
    exclusive: bool = False,
    sync: bool = True,
    guard: Callable[[], AbstractContextManager] = nullcontext,
) -> int:
    """Replace ``path`` whole (create it, with ``exclusive``) and return the bytes written: a reader, and
    the file after a crash, shows the old content or the new one, never part of either.

    The data goes to a temporary file in the same folder (``temp_name``), which is fsynced, then renamed
    over ``path`` (hard-linked to it with ``exclusive``: FileExistsError when ``path`` exists), and the
    folder is fsynced. The temporary file is removed on any error, including one raised while iterating
    ``data`` (e.g. a failed checksum), so a caller can refuse the content until the last chunk.

    ``mode``: the file's exact mode (None: as open() makes it, 0o666 less the umask); ``owner``: the
    (uid, gid) to give it; ``sync=False``: atomic but not durable, for scratch files; ``guard``: the
    context the helper's own file operations run in (``os_faults_as(...)`` to raise them as the caller's
    error), while an error of ``data`` itself passes as it is.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temp = os.path.join(directory, temp_name(name))
    chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    created = False
    try:
        with guard():
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666 if mode is None else mode)
        try:
            size = _write_chunks(fd, chunks, mode, owner, sync, guard)
        finally:
            os.close(fd)
        with guard():
            created = _commit(temp, path, exclusive)
            if created and sync:
                fsync_dir(directory or ".")
    finally:
        if not created:  # an error, or the name exists: the temporary file goes
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
    if not created:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    return size


def _write_chunks(
    fd: int,
    chunks: Iterable[bytes],
    mode: int | None,
    owner: tuple[int, int] | None,
    sync: bool,
    guard: Callable[[], AbstractContextManager],
) -> int:
    with guard():
        if mode is not None:
            os.fchmod(fd, mode)  # the mode given to os.open is filtered by the umask
        if owner:
            os.fchown(fd, *owner)
    size = 0
    for chunk in chunks:
        view = memoryview(chunk)
        with guard():
            while view:  # a write may be short
                view = view[os.write(fd, view) :]
        size += len(chunk)
    if sync:
        with guard():
            os.fsync(fd)
    return size


def _commit(temp: str, path: str, exclusive: bool) -> bool:
    """Put ``temp`` in place of ``path``; False when ``exclusive`` and ``path`` exists."""
    if not exclusive:
        os.replace(temp, path)
        return True
    try:
        os.link(temp, path)  # an atomic create: fails when the name exists
    except FileExistsError:
        return False
    os.unlink(temp)
    return True


# -- OS faults as messages -------------------------------------------------------------------------


def os_reason(error: OSError) -> str:
    """What the OS said, without Python's ``[Errno N]`` prefix: "No space left on device"."""
    return error.strerror or str(error) or type(error).__name__


def describe_os_error(error: OSError) -> str:
    """``<path>: <reason>`` (``<path> -> <path2>: <reason>`` for a rename); the reason alone without a path."""
    paths = " -> ".join(os.fsdecode(p) for p in (error.filename, error.filename2) if p is not None)
    return f"{paths}: {os_reason(error)}" if paths else os_reason(error)


def os_fault_hint(
    error: OSError, where: str | os.PathLike, *, space: str = ", then retry", access: str = ""
) -> str | None:
    """What to do about the faults a user can fix (a full or read-only filesystem, missing permissions)
    while writing under ``where``; ``space`` and ``access`` end the advice with the caller's own."""
    if error.errno in NO_SPACE:
        return f"the filesystem holding {where} is full (or over quota): free space there{space}"
    if error.errno in NO_PERMISSION:
        refused = os.path.dirname(os.fsdecode(error.filename)) if error.filename else where
        return f"the OS user {_user_name()} may not write in {refused}: check its owner and permissions{access}"
    if error.errno == errno.EROFS:
        return f"{where} is on a read-only filesystem"
    return None


@contextmanager
def os_faults_as(
    error_class: type[HadrError],
    message: str,
    hint: Callable[[OSError], str | None] | None = None,
    *,
    with_path: bool = False,
) -> Iterator[None]:
    """Raise an OSError of the block as ``error_class("<message>: <reason>")`` (``<message>: <path>:
    <reason>`` with ``with_path``), chained to the OSError so that ``-v`` shows it."""
    try:
        yield
    except OSError as error:
        reason = describe_os_error(error) if with_path else os_reason(error)
        raise error_class(f"{message}: {reason}", hint=hint(error) if hint else None) from error


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
