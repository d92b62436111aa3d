"""hadr verify repo | queues."""

from __future__ import annotations

import click

from hadr_backup.verify.repo import run_verify_repo


@click.group()
def verify() -> None:
    """Verify the repository or restored data. Exit 3 when a problem is found."""


@verify.command("repo")
@click.option(
    "--deep",
    is_flag=True,
    help="Also read every object (backups and WAL) back: decrypt each chunk and "
    "compare the SHA-256 the catalog recorded. Reads the whole repository.",
)
@click.pass_context
def verify_repo(ctx: click.Context, deep: bool) -> None:
    """Check the repository without reading the data: every object of every backup present at the size the
    catalog recorded, the WAL each backup needs stored, WAL continuous from every backup to the newest
    segment of each timeline, no object that no backup accounts for, no leftovers of interrupted writes.

    Only --deep reads the objects themselves: decryption and SHA-256 checksums."""
    report = run_verify_repo(ctx.obj.policy(), deep=deep)
    ctx.obj.ui.render(report)
    ctx.exit(report.exit_code)


@verify.command("queues")
@click.option(
    "--source", "source_name", metavar="NAME", help="A sources.redis entry (default: the one with role queue)."
)
@click.option("--url", metavar="URL", help="Any Redis instead, e.g. a restored one: redis://[user:pw@]host:port[/db].")
@click.option(
    "--requeue-active",
    is_flag=True,
    help="Move jobs left in active with no worker's lock back to wait, atomically, as BullMQ's stalled-job "
    "check would (for a restored instance, before its workers start).",
)
@click.option("--prefix", default="bull", show_default=True, help="The BullMQ key prefix.")
@click.pass_context
def verify_queues(
    ctx: click.Context, source_name: str | None, url: str | None, requeue_active: bool, prefix: str
) -> None:
    """Check the BullMQ queues of a live Redis: every job id in a state (wait, paused, active, prioritized,
    delayed, waiting-children, completed, failed) has its hash and is in one state only, the id counter is
    at or past the highest job id, and no job is left active without a worker's lock."""
    from hadr_backup.redis.queuerun import VerifyQueuesOptions, run_verify_queues

    options = VerifyQueuesOptions(source_name, url, requeue_active, prefix)
    result = run_verify_queues(ctx.obj.policy, options)
    ctx.obj.ui.render(result)
    ctx.exit(result.exit_code)
