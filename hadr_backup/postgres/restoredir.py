"""The directory ``hadr restore pg`` writes into: what it must never hit, and putting it back on failure.

refuse_unsafe(policy, to, ...)   before planning, touching nothing: --to must not be, hold or lie
                                 inside the repository, the key file, the policy file, a source's
                                 data, or a directory holding a postmaster.pid; non-empty only with --force
Workspace.prepare(to, ...)       once the plan holds: created, or emptied (--force --discard), or its
                                 old contents moved aside to ``<dir>.hadr-old-<UTC stamp>`` (--force)
workspace.put_back_on_failure()  any failure while writing: the partial directory goes, and the
                                 directory is as it was before (old contents moved back)
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hadr_backup.errors import HadrError, RestoreFailed, UsageError
from hadr_backup.fsutil import describe_os_error, fsync_dir
from hadr_backup.policy.model import Policy
from hadr_backup.postgres import recovery
from hadr_backup.procs import POSTGRES_OS_USER, running_as_root
from hadr_backup.timefmt import compact

PID_FILE = "postmaster.pid"
ABSENT, EMPTY, DISCARDED, MOVED = "absent", "empty", "discarded", "moved aside"  # what --to was before


def kept_paths(policy: Policy) -> list[tuple[str, str]]:
    """(what, path) of everything a restore must never write over, move or delete."""
    kept = [
        ("the repository", policy.repository.path),
        ("the key file", policy.encryption.key_file),
        ("the policy file", policy.path if os.path.isfile(policy.path) else None),
    ]
    for source in policy.sources.postgres:
        kept += [
            (f"the data directory of PostgreSQL source {source.name}", source.data_dir),
            (f"the WAL spool of PostgreSQL source {source.name}", source.spool_dir),
        ]
    kept += [(f"the AOF directory of Redis source {source.name}", source.aof_dir) for source in policy.sources.redis]
    return [(what, path) for what, path in kept if path]


def relation(real_to: str, kept: str) -> str | None:
    """How the real path ``real_to`` stands to the real path ``kept``: is, contains, is inside, or None."""
    if real_to == kept:
        return "is"
    if kept.startswith(real_to.rstrip(os.sep) + os.sep):
        return "contains"
    if real_to.startswith(kept.rstrip(os.sep) + os.sep):
        return "is inside"
    return None


def refuse_unsafe(policy: Policy, to: Path, *, force: bool, discard: bool) -> None:
    """UsageError when restoring into ``to`` could overwrite, move or delete what must be kept."""
    if discard and not force:
        raise UsageError("--discard only goes with --force", hint="--force --discard deletes what --to holds")
    real = os.path.realpath(to)
    if real == os.sep:
        raise UsageError(f"--to {to} is the root directory", hint="restore into a directory of its own")
    hits = [
        f"{how} {what} {path}" for what, path in kept_paths(policy) if (how := relation(real, os.path.realpath(path)))
    ]
    if hits:
        raise UsageError(f"--to {to} {'; '.join(hits)}", hint="restore into a directory of its own, outside these")
    for parent in Path(real).parents:  # inside a data directory whose server may be running
        _refuse_server(to, real, parent)
    if to.exists() and not to.is_dir():
        raise UsageError(f"{to} exists and is not a directory")
    if to.is_dir() and any(to.iterdir()):
        if not force:
            raise _not_empty(to)
        for directory, names, files in os.walk(to):  # os.walk never follows symlinks by default
            if PID_FILE in files or PID_FILE in names:
                _refuse_server(to, real, Path(directory))


def _not_empty(to: Path) -> UsageError:
    return UsageError(
        f"{to} is not empty",
        hint="restore into an empty directory, or add --force to move what it "
        "holds aside (--force --discard: delete it)",
    )


def _refuse_server(to: Path, real_to: str, directory: Path) -> None:
    """UsageError when ``directory`` (``to``, above or below it) holds a postmaster.pid."""
    if not os.path.lexists(directory / PID_FILE):
        return
    how = relation(real_to, os.path.realpath(directory))
    place = "" if how == "is" else f" {directory},"
    pid = recovery.postmaster_pid(directory)
    server = (
        f"a running PostgreSQL server (postmaster.pid {pid})"
        if pid
        else "a PostgreSQL server that is running or was not shut down cleanly (it has a postmaster.pid)"
    )
    raise UsageError(
        f"--to {to} {how}{place} the data directory of {server}",
        hint="stop that server first; a restore never replaces a cluster that may be running",
    )


@dataclass
class Workspace:
    """``--to`` made ready for the restore, and what it was before, to put it back."""

    path: Path
    before: str  # ABSENT | EMPTY | DISCARDED | MOVED
    owner: tuple[int, int] | None = None
    aside: Path | None = None  # where the old contents went (MOVED)

    @classmethod
    def prepare(cls, to: Path, *, force: bool, discard: bool) -> Workspace:
        """An empty ``to`` (mode 0700, owned by postgres when root); old contents moved aside or deleted."""
        aside = None
        if not to.exists():
            before = ABSENT
        elif not any(to.iterdir()):
            before = EMPTY
        elif not force:
            raise _not_empty(to)
        elif discard:
            before = DISCARDED
            _empty(to)
        else:
            before, aside = MOVED, _move_aside(to)
        to.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(to, 0o700)
        owner = None
        if running_as_root():
            entry = pwd.getpwnam(POSTGRES_OS_USER)
            owner = (entry.pw_uid, entry.pw_gid)
            os.chown(to, *owner)
        fsync_dir(to.parent)
        return cls(to, before, owner, aside)

    @contextmanager
    def put_back_on_failure(self, what: str) -> Iterator[None]:
        """Any failure inside: the directory put back as it was, and the error says so (errors that
        are not HadrError become RestoreFailed, prefixed with ``what``)."""
        try:
            yield
        except HadrError as error:
            error.amend(hint=self.put_back())
            raise
        except Exception as error:
            raise failure(what, error).amend(hint=self.put_back()) from error
        except BaseException:
            self.put_back()
            raise

    def put_back(self) -> str:
        """Remove what the restore wrote and restore what was there; say what was done."""
        try:
            if self.before == ABSENT:
                shutil.rmtree(self.path)
                return f"{self.path} was removed"
            if self.before == MOVED and self.aside is not None:
                shutil.rmtree(self.path)
                os.rename(self.aside, self.path)
                return f"{self.path} holds its previous contents again"
            _empty(self.path)
            return f"{self.path} was emptied again"
        except OSError as error:
            kept = f"; its previous contents are in {self.aside}" if self.before == MOVED else ""
            return f"what was written to {self.path} could not all be removed ({_os_text(error)}){kept}"


def _move_aside(to: Path) -> Path:
    aside, attempt = to.with_name(f"{to.name}.hadr-old-{compact()}"), 1
    while os.path.lexists(aside):  # another restore in the same second
        attempt += 1
        aside = to.with_name(f"{to.name}.hadr-old-{compact()}-{attempt}")
    try:
        os.rename(to, aside)
    except OSError as error:
        why = "it is a mount point" if error.errno in (errno.EBUSY, errno.EXDEV) else _os_text(error)
        raise UsageError(
            f"--force cannot move what {to} holds aside (to {aside}): {why}",
            hint="add --discard to delete it instead, or restore into another directory",
        ) from error
    return aside


def _empty(directory: Path) -> None:
    for child in directory.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


@contextmanager
def naming(prefix: str | Callable[[], str]) -> Iterator[None]:
    """Errors raised inside carry ``prefix()`` (e.g. ``restoring backup X: <object key>``) before their
    message; those that are not HadrError become RestoreFailed."""
    try:
        yield
    except HadrError as error:
        error.amend(prefix=f"{_text(prefix)}: ")
        raise
    except Exception as error:
        raise failure(_text(prefix), error) from error


def _text(prefix: str | Callable[[], str]) -> str:
    return prefix() if callable(prefix) else prefix


def failure(what: str, error: Exception) -> RestoreFailed:
    full = getattr(error, "errno", None) == errno.ENOSPC
    hint = "free space on that filesystem, or restore into another directory" if full else None
    return RestoreFailed(f"{what}: {_os_text(error)}", hint=hint)


def _os_text(error: Exception) -> str:
    if isinstance(error, OSError):
        return describe_os_error(error)
    return str(error) or type(error).__name__
