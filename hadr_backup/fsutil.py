"""Durability helpers shared by every writer of local files, and how their OS faults read."""

from __future__ import annotations

import errno
import os
import pwd
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hadr_backup.errors import HadrError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_PERMISSION = (errno.EACCES, errno.EPERM)


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


# -- OS faults as messages -------------------------------------------------------------------------


def os_reason(error: OSError) -> str:
    """What the OS said, without Python's ``[Errno N]`` prefix: "No space left on device"."""
    return error.strerror or str(error) or type(error).__name__


def describe_os_error(error: OSError) -> str:
    """``<path>: <reason>`` (``<path> -> <path2>: <reason>`` for a rename); the reason alone without a path."""
    paths = " -> ".join(os.fsdecode(p) for p in (error.filename, error.filename2) if p is not None)
    return f"{paths}: {os_reason(error)}" if paths else os_reason(error)


def os_fault_hint(error: OSError, where: str | os.PathLike, *, space: str = ", then retry",
                  access: str = "") -> str | None:
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
def os_faults_as(error_class: type[HadrError], message: str, hint: Callable[[OSError], str | None] | None = None,
                 *, with_path: bool = False) -> Iterator[None]:
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
