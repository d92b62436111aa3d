"""Durability helpers shared by every writer of local files."""

from __future__ import annotations

import errno
import os


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
