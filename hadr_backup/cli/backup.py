"""hadr backup pg | redis | s3 | all."""

from __future__ import annotations

import click

from hadr_backup.objectstore import KIND as S3
from hadr_backup.postgres import KIND as PG
from hadr_backup.redis import KIND as REDIS


@click.group()
def backup() -> None:
    """Take one backup now."""


@backup.command(PG)
@click.option("--source", "source_name", metavar="NAME", help="Which sources.postgres entry (default: the only one).")
@click.pass_obj
def backup_pg(app, source_name: str | None) -> None:
    """Stream a base backup of a PostgreSQL cluster into the repository.

    Complete only once the WAL from its start to its stop is archived in the repository.
    """
    from hadr_backup.engines import EngineContext, engine

    app.ui.render(engine(PG).backup(EngineContext(app.policy(), app.ui), source_name))


@backup.command(REDIS)
@click.option("--source", "source_name", metavar="NAME", help="Which sources.redis entry (default: the only one).")
@click.pass_obj
def backup_redis(app, source_name: str | None) -> None:
    """Stream an RDB snapshot of a Redis instance into the repository (over the replication protocol)."""
    from hadr_backup.engines import EngineContext, engine

    app.ui.render(engine(REDIS).backup(EngineContext(app.policy(), app.ui), source_name))


@backup.command(S3)
@click.option("--source", "source_name", metavar="NAME", help="Which sources.buckets entry (default: the only one).")
@click.pass_obj
def backup_s3(app, source_name: str | None) -> None:
    """Copy the bucket versions no earlier run copied (into the repository, or the policy's mirror bucket).

    One manifest per bucket per run; incremental on the last complete run of the source."""
    from hadr_backup.engines import EngineContext, engine

    app.ui.render(engine(S3).backup(EngineContext(app.policy(), app.ui), source_name))


@backup.command("all")
@click.pass_context
def backup_all(ctx: click.Context) -> None:
    """Back up every source the policy lists, kind by kind (PostgreSQL, Redis, S3).

    A source that fails does not stop the others; the exit code is the worst of them."""
    from hadr_backup.engines import EngineContext
    from hadr_backup.schedule.runners import backup_all as run_backup_all

    output = run_backup_all(EngineContext(ctx.obj.policy(), ctx.obj.ui))
    ctx.obj.ui.render(output)
    ctx.exit(output.exit_code)
