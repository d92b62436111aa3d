"""The daemon's log: one line per event (scheduler start and stop, job start and end, APScheduler's own
warnings) on stdout. JSON lines when stdout is not a terminal (or with --json), each conforming to
docs/schemas/schedule-run.json; human lines on a terminal. With --log-file the human line goes there too.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from hadr_backup.timefmt import rfc3339, short

EVENTS = ("scheduler-start", "scheduler-stop", "job-start", "job-end", "scheduler-log")


class JobLog:
    def __init__(self, ui, *, json_lines: bool | None = None, stream=None):
        self.ui = ui
        self.stream = stream or sys.stdout
        self.json_lines = (ui.json_mode or not self.stream.isatty()) if json_lines is None else json_lines
        self._mutex = threading.Lock()

    def event(self, event: str, message: str, *, level: str = "info", **fields: Any) -> None:
        """One line: ``event`` (one of EVENTS), a human ``message``, and the fields of the JSON twin."""
        now = time.time()
        if level == "debug" and self.ui.verbosity < 1:
            return
        record = {"time": rfc3339(now), "level": level, "event": event, "message": message, **fields}
        text = json.dumps(record) if self.json_lines else f"{short(now)} UTC {level.upper():5} {message}"
        with self._mutex:
            self.stream.write(text + "\n")
            self.stream.flush()
        if self.ui.log is not None:
            self.ui.log.write(level, message)


class _ToJobLog(logging.Handler):
    """APScheduler's log records (a missed run, a job still running) as scheduler-log lines."""

    def __init__(self, log: JobLog):
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        level = {logging.DEBUG: "debug", logging.INFO: "debug", logging.WARNING: "warn"}.get(record.levelno, "error")
        self.log.event("scheduler-log", record.getMessage(), level=level)


def route_scheduler_logging(log: JobLog) -> None:
    """Send APScheduler's logging to ``log``: warnings always, everything with -v."""
    logger = logging.getLogger("apscheduler")
    logger.handlers[:] = [_ToJobLog(log)]
    logger.setLevel(logging.DEBUG if log.ui.verbosity > 0 else logging.WARNING)
    logger.propagate = False
