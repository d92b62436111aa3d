"""``hadr verify queues`` (a source of the policy, or any URL), and the queue checks a restore runs on the
scratch server that proves it (queues.py does the checking)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hadr_backup.errors import UsageError
from hadr_backup.policy.model import Policy, RedisSource
from hadr_backup.redis.queues import PREFIX, QueuesResult, check_queues
from hadr_backup.redis.wire import Address, Connection
from hadr_backup.verify.findings import OK

# -- hadr verify queues --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyQueuesOptions:
    source: str | None = None  # a sources.redis entry (default: the one with role queue)
    url: str | None = None  # or any instance, e.g. one restored and started
    requeue_active: bool = False
    prefix: str = PREFIX


def run_verify_queues(policy_of: Callable[[], Policy], options: VerifyQueuesOptions) -> QueuesResult:
    """Check (and with ``requeue_active`` repair) the queues of a source or of a URL; ``policy_of`` is
    called only for a source (a URL needs no policy)."""
    if options.source and options.url:
        raise UsageError("give --source NAME or --url URL, not both")
    address = (
        Address.parse(options.url) if options.url else Address.of_source(queue_source(policy_of(), options.source))
    )
    with Connection(address) as conn:
        return check_queues(conn, prefix=options.prefix, requeue_active=options.requeue_active)


def queue_source(policy: Policy, name: str | None) -> RedisSource:
    """The source named, else the only sources.redis entry with role queue."""
    if name is not None:
        return policy.sources.redis_named(name)
    queues = [source for source in policy.sources.redis if source.role == "queue"]
    if len(queues) != 1:
        raise UsageError(
            f"{len(queues)} sources.redis entries have role queue: which one?",
            hint="pick one with --source NAME, or give --url redis://…",
        )
    return queues[0]


# -- after a restore -------------------------------------------------------------------------------------


class RestoredQueueCheck:
    """The queue checks run on the scratch server that proves a restore of a source with role queue;
    what they find becomes the restore's warnings (the data is what the source held at T: a finding is
    about the source, not about the restore)."""

    def __init__(self, source: RedisSource):
        self.enabled = source.role == "queue"
        self.warnings: list[str] = []

    def on(self, scratch) -> None:
        """Check the queues a (scratch) server holds."""
        if self.enabled:
            with scratch.connect() as conn:
                self(conn)

    def __call__(self, conn: Connection) -> None:
        if not self.enabled:
            return
        report = check_queues(conn).report
        active = [f for f in report.findings if f.code in ("job-left-active", "more-job-left-active")]
        for finding in report.findings:
            if finding.level != OK and finding not in active:
                self.warnings.append(f"queue check: {finding.code}: {finding.describe()}")
        if active:
            self.warnings.append(
                f"queue check: {len(active)} finding(s) of jobs left active ("
                + "; ".join(f.subject for f in active[:10])
                + "): nobody works on them; once the restored instance is started, before its workers, run "
                "hadr verify queues --url redis://HOST:PORT --requeue-active"
            )
