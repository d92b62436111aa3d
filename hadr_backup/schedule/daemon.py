"""``hadr schedule run``: the daemon. APScheduler wiring only; each run is ``hadr schedule exec NAME``.

    cron triggers in the policy's zone (coalesced, one instance per job, a misfire grace) → one job at a
    time (jobs take the repository lock: two at once would refuse each other) → per run a child process
    ``hadr schedule exec NAME --tick T`` (the lease, the history and the job itself live there) → a log
    line at its start and end → metrics refreshed in the background and after each run

SIGTERM or SIGINT: no new runs; the running child gets SIGTERM, fails cleanly (its backup marked failed
and removed, the history says ``interrupted``) and is waited for; then exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from hadr_backup.errors import UsageError
from hadr_backup.policy.model import Policy, Schedule
from hadr_backup.postgres.background import hadr_argv
from hadr_backup.schedule import metrics
from hadr_backup.schedule.joblog import JobLog, route_scheduler_logging
from hadr_backup.schedule.timing import MISFIRE_GRACE, latest_tick, trigger_for
from hadr_backup.timefmt import rfc3339

METRICS_REFRESH = 30.0  # seconds between two readings of the repository for /metrics
HEARTBEAT = 2.0  # seconds between two turns of the main loop


class Runner:
    """Runs schedule entries as child processes, one at a time; stops the running one on request."""

    def __init__(self, policy: Policy, ui, log: JobLog, after_run):
        self.policy, self.ui, self.log, self.after_run = policy, ui, log, after_run
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None
        self._mutex = threading.Lock()

    def argv(self, schedule: Schedule, tick: datetime | None) -> list[str]:
        chatter = ["-v"] if self.ui.verbosity > 0 else ["-q"]
        logging = ["--log-file", self.ui.log.path, "--log-level", self.ui.log.level] if self.ui.log else []
        when = ["--tick", rfc3339(tick)] if tick is not None else []
        return hadr_argv(self.policy.path, *logging, *chatter, "--json", "schedule", "exec", schedule.name, *when)

    def run(self, schedule: Schedule, trigger) -> None:
        if self.stopping.is_set():
            return
        tick = latest_tick(trigger, datetime.now(UTC))
        fields = {"schedule": schedule.name, "job": schedule.job, "tick": rfc3339(tick)}
        self.log.event("job-start", f"start {schedule.name} ({schedule.job})", **fields)
        began = time.monotonic()
        with self._mutex:
            self.child = subprocess.Popen(self.argv(schedule, tick), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        out, _ = self.child.communicate()
        code, self.child = self.child.returncode, None
        self._ended(schedule, fields, out, code, time.monotonic() - began)
        self.after_run()

    def _ended(self, schedule: Schedule, fields: dict, out: bytes, code: int, seconds: float) -> None:
        try:
            done = json.loads(out)
            outcome, error = done["result"], done["error"]
        except (ValueError, KeyError, TypeError):
            if self.stopping.is_set():  # stopped by us before it could say anything
                outcome, error = "interrupted", f"stopped by SIGTERM before it reported (exit {code})"
            else:
                outcome, error = "failed", f"hadr schedule exec exited {code} without a result (its error is above)"
        level = "info" if outcome in ("succeeded", "skipped") else "error"
        said = f"end {schedule.name} ({schedule.job}): {outcome} after {seconds:.1f} s" + (
            f": {error}" if error else ""
        )
        self.log.event("job-end", said, level=level, outcome=outcome, seconds=round(seconds, 3), error=error, **fields)

    def stop(self) -> None:
        """No new runs; the running child (if any) is asked to stop and waited for."""
        self.stopping.set()
        with self._mutex:
            child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            child.wait()


def run_daemon(policy: Policy, ui, *, metrics_port: int | None, metrics_address: str = "0.0.0.0") -> None:
    """Schedule the policy's entries until SIGTERM or SIGINT."""
    if not policy.schedules:
        raise UsageError(f"{policy.path} has no schedules", hint="add schedules: [{name, job, cron}] to the policy")
    log = JobLog(ui)
    route_scheduler_logging(log)
    state = _MetricsState(policy, log)
    runner = Runner(policy, ui, log, after_run=state.refresh_soon)
    scheduler = BackgroundScheduler(
        timezone=ZoneInfo(policy.timezone),
        executors={"default": ThreadPoolExecutor(1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE},
    )
    for schedule in policy.schedules:
        trigger = trigger_for(schedule, policy)
        scheduler.add_job(runner.run, trigger, args=[schedule, trigger], id=schedule.name, name=schedule.name)
    stop = _stop_on_signals()
    if metrics_port is not None:
        state.serve(metrics_port, metrics_address)
    scheduler.start()
    log.event("scheduler-start", _started(policy, metrics_port), schedules=len(policy.schedules), pid=os.getpid())
    try:
        state.loop(stop)
    finally:
        scheduler.pause()
        runner.stop()
        scheduler.shutdown(wait=True)
        state.up = False
        log.event("scheduler-stop", "stopped: no job left running", schedules=len(policy.schedules), pid=os.getpid())


def _started(policy: Policy, port: int | None) -> str:
    served = f", metrics on :{port}/metrics" if port is not None else ""
    return f"scheduling {len(policy.schedules)} entries of {policy.path} in {policy.timezone}{served}"


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


class _MetricsState:
    """The newest metrics snapshot (read in the main loop, never in a scrape) and the scheduler's own."""

    def __init__(self, policy: Policy, log: JobLog):
        self.policy, self.log = policy, log
        self.snapshot = metrics.Snapshot([])
        self.up, self.heartbeat = True, time.time()
        self._due = threading.Event()
        self._due.set()

    def families(self):
        return [*metrics.scheduler_families(self.up, self.heartbeat), *self.snapshot.families]

    def serve(self, port: int, address: str) -> None:
        from prometheus_client import start_http_server

        try:
            start_http_server(port, addr=address, registry=metrics.registry_of(self.families))
        except OSError as error:
            raise UsageError(f"cannot serve metrics on {address}:{port}: {error.strerror or error}") from error

    def refresh_soon(self) -> None:
        self._due.set()

    def loop(self, stop: threading.Event) -> None:
        last = 0.0
        while not stop.wait(HEARTBEAT):
            self.heartbeat = time.time()
            if self._due.is_set() or time.monotonic() - last > METRICS_REFRESH:
                self._due.clear()
                self.snapshot, last = metrics.collect(self.policy, time.time()), time.monotonic()
                for error in self.snapshot.errors:
                    self.log.event("scheduler-log", f"metrics: {error}", level="warn")
