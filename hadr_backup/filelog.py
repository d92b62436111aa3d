"""The file log (``--log-file PATH --log-level error|warn|info|debug``), for cron and archive_command.

Every line is ``<RFC 3339 UTC> <pid> <LEVEL> <message>``; a message of several lines gives several lines
with the same head, so that ``grep`` finds each. A message is appended in one ``write`` on a file opened
with ``O_APPEND``, so hadr processes sharing the file (a cron backup and the archive_command) never
interleave within a line. At ``info`` the file gets what hadr said on stderr (progress phases included)
and the result it printed; ``debug`` adds the tracebacks of errors and a line every few seconds of long work.
"""

from __future__ import annotations

import os
import time

from hadr_backup.timefmt import rfc3339

LEVELS = ("error", "warn", "info", "debug")
DEFAULT_LEVEL = "info"


class FileLog:
    """An open log file, and the level up to which lines go in."""

    def __init__(self, path: str, level: str = DEFAULT_LEVEL):
        """Open (create, mode 0640) ``path`` for appending; OSError when that is not possible."""
        if level not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        self.path = path
        self.level = level
        self.failure: str | None = None  # why the file stopped taking lines, when it did
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def wants(self, level: str) -> bool:
        return LEVELS.index(level) <= LEVELS.index(self.level)

    def write(self, level: str, message: str) -> None:
        """Append ``message`` at ``level`` (when the file's level lets it in). A log that cannot be written
        must not fail the work it describes: the log is closed and ``failure`` says why."""
        if self._fd is None or not self.wants(level):
            return
        head = f"{rfc3339(time.time())} {os.getpid()} {level.upper():5} "
        text = "".join(f"{head}{line}\n" for line in (message.splitlines() or [""]))
        try:
            os.write(self._fd, text.encode("utf-8", "backslashreplace"))
        except OSError as error:
            self.failure = f"cannot write {self.path}: {error.strerror or error}"
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
