"""One error hierarchy: the message and the exit code live on the class.

Every user-facing error says what was wrong and what to do. The CLI prints ``str(error)`` (one line,
plus the hint on a second line) and exits with ``error.exit_code``; a traceback only with ``-v``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3


class HadrError(Exception):
    """Something went wrong."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str | None = None, *, hint: str | None = None):
        self.message = message or (self.__doc__ or "error").strip()
        self.hint = hint
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def amend(self, *, prefix: str = "", hint: str = "") -> HadrError:
        """This error (same class, same exit code) with ``prefix`` before its message and ``hint``
        before its hint: context added on the way up, e.g. which object was being read."""
        self.message = prefix + self.message
        self.args = (self.message,)
        if hint:
            self.hint = f"{hint}; {self.hint}" if self.hint else hint
        return self


# -- bad usage or input (exit 2) ----------------------------------------------------------------


class UsageError(HadrError):
    """Bad usage or bad input."""

    exit_code = EXIT_USAGE


class PolicyError(UsageError):
    """The policy file is not valid."""


class BadKey(UsageError):
    """A storage key is not acceptable (absolute path, '..', empty part)."""


class BadTarget(UsageError):
    """The recovery target is not valid."""


class TargetUnreachable(UsageError):
    """The requested recovery target is outside the restorable window."""


# -- failures (exit 1) --------------------------------------------------------------------------


class RepositoryError(HadrError):
    """The repository cannot be used."""


class RepositoryNotInitialized(RepositoryError):
    """There is no repository here."""


class RepositoryWriteFailed(RepositoryError):
    """The repository refused a write: no space left, no permission, an I/O error."""


class ObjectMissing(RepositoryError):
    """An object the repository needs is missing."""


class ObjectExists(RepositoryError):
    """An object already exists under that key."""


class ObjectChanged(RepositoryError):
    """The object changed since it was read (a conditional write or delete lost a race)."""


class LockHeld(RepositoryError):
    """Another hadr process holds the repository lock."""


class LockLost(RepositoryError):
    """The repository lock was taken over while this process held it."""


class TransientStorageError(RepositoryError):
    """The storage backend failed in a way that may pass on retry."""


class StorageUnreadable(RepositoryError):
    """The storage could not be read (permission, I/O error, a vanished root, a refused request): what it
    holds is unknown, which is never the same as "nothing there"."""


class IntegrityError(RepositoryError):
    """A stored object failed verification."""


class TamperedData(IntegrityError):
    """An authenticated chunk does not verify: the object was modified."""


class TruncatedObject(IntegrityError):
    """The object ends before its final chunk: it was truncated."""


class ChunkOrderError(IntegrityError):
    """Chunks are out of order or missing."""


class ChecksumMismatch(IntegrityError):
    """The stored object's SHA-256 does not match the catalog."""


class CatalogMissing(IntegrityError):
    """The repository holds backups or WAL but neither the catalog nor its copy."""

    exit_code = EXIT_VERIFY


class BackupNotWhole(RepositoryError):
    """An object of the backup is missing from the repository or not the size the catalog recorded."""


class RestoreFailed(HadrError):
    """A restore failed after it began writing."""


class WrongKey(HadrError):
    """The encryption key does not open this repository."""

    exit_code = EXIT_USAGE


class KeyMissing(HadrError):
    """The repository is encrypted and no key was given."""

    exit_code = EXIT_USAGE


class LocalFileError(HadrError):
    """A local file or directory cannot be read or written."""


class ServerError(HadrError):
    """A server hadr talks to failed or cannot be reached."""


# -- S3 bucket sources ----------------------------------------------------------------------------


class BucketUnavailable(UsageError):
    """A bucket source (or its mirror) cannot be used: no such bucket, access denied, endpoint unreachable."""


class VersionGone(HadrError):
    """An object version was deleted from its bucket after it was listed."""


class SourceChecksumMismatch(IntegrityError):
    """What was read from a bucket does not match the checksum the bucket gave for it."""

    exit_code = EXIT_VERIFY
