"""``hadr schedule exec NAME``: one run of a schedule entry, as the daemon and cron lines start it.

    take the job's lease (held elsewhere: skip) → the same tick already run elsewhere: skip → record the
    start in the job history → run the job → record its end (result, duration, error) → release

SIGTERM or SIGINT while the job runs interrupts it cleanly: the job's own cleanup runs (a backup is
marked failed and its objects removed, as on any error), the history says ``interrupted``, the lease is
released. Outside the job the signal is noted and the run ends as it would have.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hadr_backup.engines import EngineContext
from hadr_backup.errors import EXIT_FAILURE, EXIT_OK, HadrError, LockHeld, UsageError
from hadr_backup.policy.model import Policy
from hadr_backup.repo.repository import open_repo
from hadr_backup.schedule import history
from hadr_backup.schedule.jobs import job_function
from hadr_backup.schedule.lease import job_lease
from hadr_backup.timefmt import format_time, rfc3339


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived while the job ran (a BaseException: no ``except Exception`` swallows it)."""


@dataclass
class ExecResult:
    schedule: str
    job: str
    result: str  # succeeded | failed | interrupted | skipped
    started_at: float
    ended_at: float
    tick: float | None = None
    error: str | None = None  # why it failed, or why it was skipped
    exit_code: int = EXIT_OK
    output: Any = None  # the job's result value

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "job": self.job,
            "result": self.result,
            "tick": rfc3339(self.tick),
            "started_at": rfc3339(self.started_at),
            "ended_at": rfc3339(self.ended_at),
            "seconds": round(self.ended_at - self.started_at, 3),
            "error": self.error,
            "exit_code": self.exit_code,
            "output": self.output.to_json() if self.output is not None else None,
        }

    def render(self, out) -> None:
        if self.output is not None:
            self.output.render(out)
        seconds = self.ended_at - self.started_at
        out.line(f"{self.schedule} ({self.job}): {self.result} after {seconds:.1f} s" + _why(self.error))


def _why(error: str | None) -> str:
    return f": {error}" if error else ""


def resolve_tick(policy: Policy, name: str, tick: str | None, now: float | None = None) -> float | None:
    """``--tick``: an RFC 3339 instant, or ``schedule`` (the entry's newest scheduled instant within the
    misfire grace: what a cron line runs for), or None."""
    if tick is None:
        return None
    if tick == "schedule":
        from hadr_backup.schedule.timing import latest_tick, trigger_for

        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        found = latest_tick(trigger_for(policy.schedule_named(name), policy), moment)
        return found.timestamp() if found is not None else None
    try:
        parsed = datetime.fromisoformat(tick)
    except ValueError:
        raise UsageError(f"--tick {tick!r} is neither an RFC 3339 instant nor `schedule`") from None
    if parsed.tzinfo is None:
        raise UsageError(f"--tick {tick!r} has no UTC offset", hint="e.g. 2026-12-01T02:00:00Z")
    return parsed.timestamp()


def run_schedule_exec(policy: Policy, name: str, ui=None, *, tick: float | None = None, clock=None) -> ExecResult:
    """Run the schedule entry ``name`` once (``tick``: the scheduled instant it runs for, if any)."""
    schedule = policy.schedule_named(name)
    ctx = EngineContext(policy, ui, clock) if clock else EngineContext(policy, ui)
    began = ctx.clock()
    with (
        open_repo(policy, write=True, lock=False, catalog=False) as repo,
        signals_noted() as guard,
        ExitStack() as held,
    ):
        # 1. one holder of the job at a time, across daemons, hosts and cron lines
        try:
            held.enter_context(job_lease(repo.store, schedule.job, policy.repository.lock_ttl))
        except LockHeld as taken:
            return _skip(repo, name, schedule.job, began, ctx.clock(), tick, taken.message)
        # 2. a tick another process has run already is not run twice
        done = history.read_history(repo).get(name)
        if tick is not None and done is not None and done.last_tick == tick:
            reason = f"the run for {format_time(tick)} was already made by {done.host} (pid {done.pid})"
            return _skip(repo, name, schedule.job, began, ctx.clock(), tick, reason)
        # 3. recorded as running, run, recorded as ended
        history.started(repo, name, schedule.job, began, tick)
        result = _run(schedule.job, ctx, guard, began, name, tick)
        if result.result == history.INTERRUPTED:
            _fail_own_running(repo, result.error or "interrupted")
        history.ended(repo, name, result.result, began, result.ended_at, result.error)
        return result


def _skip(repo, name: str, job: str, began: float, now: float, tick: float | None, reason: str) -> ExecResult:
    history.skipped(repo, name)
    return ExecResult(name, job, history.SKIPPED, began, now, tick, reason)


def _run(job: str, ctx: EngineContext, guard: _Guard, began: float, name: str, tick: float | None) -> ExecResult:
    try:
        with guard.interruptible():
            output = job_function(job)(ctx)
    except Terminated as signalled:
        return ExecResult(name, job, history.INTERRUPTED, began, ctx.clock(), tick, str(signalled), EXIT_FAILURE)
    except Exception as error:
        code = getattr(error, "exit_code", EXIT_FAILURE)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return ExecResult(name, job, history.FAILED, began, ctx.clock(), tick, message, code)
    code = getattr(output, "exit_code", EXIT_OK)
    if code == EXIT_OK:
        return ExecResult(name, job, history.SUCCEEDED, began, ctx.clock(), tick, None, EXIT_OK, output)
    error = getattr(output, "error", None) or "the job found problems (see its output)"
    return ExecResult(name, job, history.FAILED, began, ctx.clock(), tick, error, code, output)


def _fail_own_running(repo, reason: str) -> None:
    """A backup this process began and the interruption left running (the signal came between its catalog
    write and its own cleanup) is failed and its objects removed now, not by the next writer."""
    from hadr_backup.repo import backups as lifecycle
    from hadr_backup.repo.catalog import FAILED, RUNNING

    def fail(catalog) -> None:
        for entry in catalog.entries:
            if entry.state == RUNNING and entry.pid == os.getpid() and entry.host == socket.gethostname():
                entry.state, entry.error, entry.stopped_at = FAILED, reason, time.time()

    try:
        repo.update_catalog(fail)
        lifecycle.clean_failed(repo)
    except HadrError:  # the next writer marks it failed: its pid is gone
        return


class _Guard:
    """SIGTERM/SIGINT: raise Terminated inside ``interruptible()``, once; elsewhere only noted."""

    def __init__(self) -> None:
        self.armed = False
        self.received: str | None = None

    def handle(self, signum: int, _frame) -> None:
        first = self.received is None
        self.received = self.received or signal.Signals(signum).name
        if self.armed and first:
            self.armed = False
            raise Terminated(f"interrupted by {self.received}")

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.received:
            raise Terminated(f"interrupted by {self.received}")
        self.armed = True
        try:
            yield
        finally:
            self.armed = False


@contextmanager
def signals_noted() -> Iterator[_Guard]:
    """SIGTERM and SIGINT noted by a guard (they interrupt only its ``interruptible`` blocks), then the
    previous handlers back."""
    guard = _Guard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {sig: signal.signal(sig, guard.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield guard
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
