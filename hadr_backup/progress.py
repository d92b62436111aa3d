"""Progress of long work, as the console facade (``ui.UI.progress``) draws it.

A phase (a base backup streaming, an extraction, WAL replay, a workload) is a ``Progress``: the work calls
``update(done, note=...)`` as it goes and closes it at the end (a ``with`` block closes it on every path).
On a terminal it is a rich bar on stderr (amount, rate, time left); elsewhere it is a line when the phase
starts and one when it ends, with totals; with ``-q`` nothing is drawn. The file log (``--log-file``)
receives the start and end lines whatever the console shows, and at ``debug`` a line every
``LOG_EVERY`` seconds while the phase runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hadr_backup.timefmt import human_size

LOG_EVERY = 10.0  # seconds between debug lines of a running phase in the file log
DRAW_EVERY = 0.2  # seconds between redraws of a bar

Log = Callable[[str, str], None]  # (level, message)


def duration(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s``, ``2 h 01 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class Meter:
    """How far a phase is, in its unit (``bytes``, ``seconds``, or a plural noun such as ``segments``),
    and the words that say so."""

    phase: str  # the phase as the lines and the log name it, e.g. "backup 2026…-pg-1a2b: pg_basebackup of main"
    label: str  # the short name on a bar
    total: float | None = None
    unit: str = "bytes"
    estimate: bool = False  # the total is an estimate ("about")
    done: float = 0.0
    note: str | None = None  # what else to say, e.g. "stored 3.1 MiB"
    started: float = field(default_factory=time.monotonic)
    clock: Callable[[], float] = time.monotonic

    def amount(self, value: float) -> str:
        if self.unit == "bytes":
            return human_size(int(value))
        if self.unit == "seconds":
            return f"{value:.1f} s"
        return f"{value:.0f} {self.unit.removesuffix('s') if round(value) == 1 else self.unit}"

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self.started, 0.0)

    def rate(self) -> float | None:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 and self.done > 0 else None

    def left(self) -> float | None:
        """Seconds until the total is reached at the rate so far (None: no total, or no rate yet)."""
        if self.total is None:
            return None
        if self.unit == "seconds":
            return max(self.total - self.done, 0.0)
        rate = self.rate()
        return max(self.total - self.done, 0.0) / rate if rate else None

    def _of_total(self) -> str:
        """``12.0 MiB of about 30.0 MiB``, ``6.0 s of 10.0 s``, ``12 of 40 segments``."""
        if self.total is None:
            return self.amount(self.done)
        about = "about " if self.estimate else ""
        counted = self.unit not in ("bytes", "seconds")
        return f"{f'{self.done:.0f}' if counted else self.amount(self.done)} of {about}{self.amount(self.total)}"

    def _rate_text(self) -> str | None:
        """Throughput, for bytes (a rate of segments or seconds says little)."""
        rate = self.rate()
        return f"{human_size(int(rate))}/s" if rate is not None and self.unit == "bytes" else None

    def now_text(self) -> str:
        """``12.0 MiB of about 30.0 MiB, 14.0 MiB/s, 1.3 s left; stored 3.1 MiB``"""
        parts = [self._of_total()]
        rate, left = self._rate_text(), self.left()
        parts += [rate] if rate else []
        parts += [f"{duration(left)} left"] if left is not None and self.done < (self.total or 0) else []
        return ", ".join(parts) + (f"; {self.note}" if self.note else "")

    def start_line(self) -> str:
        if self.total is None:
            return self.phase
        return f"{self.phase}, {'about ' if self.estimate else ''}{self.amount(self.total)}"

    def end_line(self, failed: bool = False) -> str:
        if failed:
            return f"{self.phase}: stopped after {duration(self.elapsed)}, at {self._of_total()}"
        rate = self._rate_text()
        text = f"{self.phase}: done, {self.amount(self.done)} in {duration(self.elapsed)}"
        text += f" ({rate})" if rate else ""
        return text + (f"; {self.note}" if self.note else "")


class Progress:
    """One phase of long work. This base draws nothing (no UI, or ``-q``); the file log still gets its lines."""

    def __init__(self, meter: Meter, log: Log | None = None):
        self.meter = meter
        self._log = log
        self._logged_at = meter.started
        self._closed = False

    def start(self) -> Progress:
        if self._log is not None:
            self._log("info", self.meter.start_line())
        self._start()
        return self

    def update(self, done: float, note: str | None = None) -> None:
        """``done`` so far, in the phase's unit; ``note``: what else to show (replaces the previous note)."""
        self.meter.done = done
        if note is not None:
            self.meter.note = note
        now = self.meter.clock()
        if self._log is not None and now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            self._log("debug", f"{self.meter.phase}: {self.meter.now_text()}")
        self._draw(now)

    def close(self, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        line = self.meter.end_line(failed)
        self._finish(line)
        if self._log is not None:
            self._log("warn" if failed else "info", line)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(failed=kind is not None)

    def _start(self) -> None:
        pass

    def _draw(self, now: float) -> None:
        pass

    def _finish(self, line: str) -> None:
        pass


def silent(phase: str = "") -> Progress:
    """A phase nobody watches (no UI was given)."""
    return Progress(Meter(phase, phase))


def shown_by(ui: Any, phase: str, **options: Any) -> Progress:
    """``ui.progress(phase, **options)``, or a silent phase when there is no UI (a caller in a library)."""
    return ui.progress(phase, **options) if ui is not None else silent(phase)


class LineProgress(Progress):
    """Not a terminal: a line when the phase starts, one when it ends."""

    def __init__(self, meter: Meter, log: Log | None, say: Callable[[str], None]):
        super().__init__(meter, log)
        self._say = say

    def _start(self) -> None:
        self._say(self.meter.start_line())

    def _finish(self, line: str) -> None:
        self._say(line)


class BarProgress(Progress):
    """A terminal: a rich bar on ``stream`` (redrawn at most every DRAW_EVERY s), then the end line."""

    def __init__(self, meter: Meter, log: Log | None, stream: Any):
        super().__init__(meter, log)
        self._stream = stream
        self._bar: Any = None
        self._drawn_at = 0.0

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        console = Console(file=self._stream, force_terminal=True)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[text]}"),
            console=console,
            transient=True,
            auto_refresh=False,
        )
        self._task = self._bar.add_task(self.meter.label, total=self.meter.total, text=self.meter.now_text())
        self._bar.start()
        self._bar.refresh()

    def _draw(self, now: float) -> None:
        if now - self._drawn_at < DRAW_EVERY:
            return
        self._drawn_at = now
        total = self.meter.total
        self._bar.update(
            self._task, completed=min(self.meter.done, total) if total else self.meter.done, text=self.meter.now_text()
        )
        self._bar.refresh()

    def _finish(self, line: str) -> None:
        self._bar.stop()
        self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
