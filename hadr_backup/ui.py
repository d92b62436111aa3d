"""One console facade with a JSON twin.

Results are values with two faces: ``to_json()`` (the stable machine API, printed on stdout with
``--json``) and ``render(out)`` (human output). Diagnostics and progress go to stderr; with
``--log-file`` they (and the human form of the result) are appended to a file too. Nothing else prints.
rich is imported only when a table or a progress bar is drawn on a terminal.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from hadr_backup import __version__
from hadr_backup.filelog import FileLog
from hadr_backup.progress import BarProgress, LineProgress, Meter, Progress, duration
from hadr_backup.timefmt import rfc3339


class Result(Protocol):
    def to_json(self) -> dict[str, Any]: ...

    def render(self, out: Human) -> None: ...


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``1 segment``, ``2 segments``, ``0 segments``; ``many`` for irregular words."""
    return f"{count} {singular if count == 1 else many or singular + 's'}"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


@dataclass
class Human:
    """Line-oriented human output; tables drawn with rich on a TTY, plain columns otherwise."""

    stream: Any = field(default_factory=lambda: sys.stdout)

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def kv(self, pairs: Sequence[tuple[str, Any]]) -> None:
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self.line(f"{key.ljust(width)}  {value}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, key_columns: int = 1) -> None:
        """A table whose cells are never cut. On a terminal too narrow for it, each row wraps into a
        block: its first ``key_columns`` cells on a line, then ``column value`` pairs on indented lines."""
        cells = [[str(c) for c in row] for row in rows]
        if self.stream.isatty():
            from rich.console import Console
            from rich.table import Table

            console = Console(file=self.stream)
            table = Table(title=title or None)
            for column in columns:
                table.add_column(column, no_wrap=True)
            for row in cells:
                table.add_row(*row)
            if console.measure(table, options=console.options.update_width(1 << 16)).maximum <= console.width:
                console.print(table)
            else:
                self._blocks(title, columns, cells, key_columns, console.width)
            return
        rows_text = [list(map(str, columns))] + cells
        widths = [max(len(r[i]) for r in rows_text) for i in range(len(columns))]
        if title:
            self.line(title)
        for row in rows_text:
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def _blocks(self, title: str, columns: Sequence[str], cells: list[list[str]], key_columns: int, width: int) -> None:
        if title:
            self.line(title)
        for row in cells:
            self.line("  ".join(row[:key_columns]))
            line = ""
            for column, cell in zip(columns[key_columns:], row[key_columns:], strict=True):
                pair = f"{column} {cell}"
                if line and len(line) + 2 + len(pair) > width:
                    self.line(line)
                    line = ""
                line = f"{line}, {pair}" if line else f"  {pair}"
            if line:
                self.line(line)


@dataclass
class UI:
    json_mode: bool = False
    verbosity: int = 0
    log: FileLog | None = None  # --log-file
    err: Any = None  # where diagnostics go; None: sys.stderr at the time of writing
    terminal: bool | None = None  # draw progress bars; None: when stderr is a TTY
    argv: list[str] = field(default_factory=list)  # the command line, for the file log
    began: float = field(default_factory=time.monotonic)

    @property
    def stderr(self) -> Any:
        return self.err if self.err is not None else sys.stderr

    def render(self, result: Result) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(result.to_json(), default=_default, indent=2) + "\n")
        else:
            result.render(Human())
        if self.log is not None and self.log.wants("info"):
            buffer = io.StringIO()
            result.render(Human(buffer))
            for line in buffer.getvalue().splitlines():
                self.log.write("warn" if line.lower().startswith("warning:") else "info", line)

    def info(self, message: str) -> None:
        """A progress or diagnostic line on stderr (hidden with -q)."""
        if self.verbosity >= 0:
            self.stderr.write(message + "\n")
        self._log("info", message)

    def warn(self, message: str) -> None:
        self.stderr.write(f"hadr: warning: {message}\n")
        self._log("warn", message)

    def error(self, message: str, *, details: str | None = None) -> None:
        """The one error line (and hint); ``details`` (a traceback) on stderr with -v, in the log at debug."""
        if details and self.verbosity > 0:
            self.stderr.write(details.rstrip("\n") + "\n")
        self.stderr.write(f"hadr: error: {message}\n")
        self._log("error", message)
        if details:
            self._log("debug", details.rstrip("\n"))

    def progress(
        self,
        phase: str,
        *,
        total: float | None = None,
        unit: str = "bytes",
        estimate: bool = False,
        label: str | None = None,
    ) -> Progress:
        """A phase of long work: a bar on a terminal, a start and an end line elsewhere, nothing with -q.
        ``unit``: bytes, seconds or a plural noun; ``estimate``: the total is approximate; ``label``: the
        short name on a bar (default: the phase)."""
        meter = Meter(phase, label or phase, total, unit, estimate)
        log = self._log if self.log is not None else None
        terminal = self.stderr.isatty() if self.terminal is None else self.terminal
        if self.verbosity < 0:
            return Progress(meter, log).start()
        if terminal:
            return BarProgress(meter, log, self.stderr).start()
        return LineProgress(meter, log, lambda line: self.stderr.write(line + "\n")).start()

    # -- the file log ----------------------------------------------------------------------------

    def open_log(self, path: str, level: str) -> None:
        """Start appending to ``path``; a file that cannot be opened is a warning, never a failure (a
        wal-push or wal-fetch must not fail for want of a log)."""
        try:
            self.log = FileLog(path, level)
        except OSError as error:
            self.warn(f"cannot open log file {path}: {error.strerror or error}; this run is not logged there")
            return
        self._log("info", f"begin: {shlex.join(['hadr', *self.argv])} (version {__version__})")

    def end(self, exit_code: int) -> None:
        """Log the end of the command and close the log; say so if the log stopped taking lines."""
        if self.log is None:
            return
        self._log("info", f"end: exit {exit_code} after {duration(time.monotonic() - self.began)}")
        failure = self.log.failure
        self.log.close()
        self.log = None
        if failure:
            self.warn(f"the log file stopped taking lines: {failure}")

    def _log(self, level: str, message: str) -> None:
        if self.log is not None:
            self.log.write(level, message)
