"""The lease of a scheduled job: whoever holds it runs the job; everyone else skips that run.

A ``LeaseLock`` (repo/lock.py) on ``layout.job_lease(job)``, in the repository itself whatever its
storage (S3: conditional requests; local: the driver's compare-and-swap), so daemons on several hosts,
in several containers, and cron lines sharing one repository never run the same job at once. The holder
renews it every ttl/3 while the job runs; a holder that dies stops renewing and the lease expires (on
the same host, at once: its pid is gone), after which the next run takes it over.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hadr_backup.repo import layout
from hadr_backup.repo.lock import LeaseLock
from hadr_backup.schedule.jobs import job_slug


@contextmanager
def job_lease(store, job: str, ttl: float) -> Iterator[LeaseLock]:
    """Hold the lease of ``job`` while the block runs; LockHeld (naming the holder) when another has it."""
    lease = LeaseLock(store, layout.job_lease(job_slug(job)), ttl=ttl).acquire()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                lease.renew()
            except Exception:  # a missed renewal is retried; a lease lost meanwhile is marked lost
                continue

    renewer = threading.Thread(target=renew, name="hadr-job-lease", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join(timeout=30)
        lease.release()
