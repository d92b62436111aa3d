"""hadr backup pg (redis, s3 and all join this group)."""

from __future__ import annotations

import click


@click.group()
def backup() -> None:
    """Take one backup now."""


@backup.command("pg")
@click.option("--source", "source_name", metavar="NAME", help="Which sources.postgres entry (default: the only one).")
@click.pass_obj
def backup_pg(app, source_name: str | None) -> None:
    """Stream a base backup of a PostgreSQL cluster into the repository.

    Complete only once the WAL from its start to its stop is archived in the repository.
    """
    from hadr_backup.postgres.basebackup import run_backup_pg

    app.ui.render(run_backup_pg(app.policy(), source_name, app.ui))
