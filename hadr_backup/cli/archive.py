"""hadr archive redis: the Redis AOF, archived for point-in-time recovery."""

from __future__ import annotations

import click

from hadr_backup.redis import KIND as REDIS


@click.group()
def archive() -> None:
    """Archive a source's change stream continuously (Redis: its AOF)."""


@archive.command(REDIS)
@click.option("--source", "source_name", metavar="NAME", help="Which sources.redis entry (default: the only one).")
@click.option(
    "--follow",
    "seconds",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Keep archiving, a pass every SECONDS, until SIGTERM or SIGINT (a sidecar); default: one pass.",
)
@click.pass_obj
def archive_redis(app, source_name: str | None, seconds: float | None) -> None:
    """Copy what Redis appended to its AOF since the last run into the repository.

    Needs the AOF directory on this host (the source's aof_dir), appendonly yes, aof-timestamp-enabled yes
    and aof-disable-auto-gc yes; history files are removed once archived whole. Without aof_dir on this
    host the source gets snapshots only, and this says so."""
    from hadr_backup.redis.aofarchive import follow_archive_redis, run_archive_redis

    if seconds is None:
        result = run_archive_redis(app.policy(), source_name)
    else:
        result = follow_archive_redis(app.policy(), source_name, seconds, app.ui)
    app.ui.render(result)
