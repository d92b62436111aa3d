"""hadr prune."""

from __future__ import annotations

import os

import click

# tests only: the instant a prune takes as now (a simulated day of backups), in any --target-time spelling
NOW_ENV = "HADR_NOW"


@click.command()
@click.option("--dry-run", is_flag=True, help="Say what would be kept and removed, and change nothing.")
@click.option("--source", "source_name", metavar="NAME", help="Only this source (default: every source).")
@click.pass_obj
def prune(app, dry_run: bool, source_name: str | None) -> None:
    """Apply the retention policy: expire backups it does not keep, and remove what no kept backup needs.

    A table says, for every backup, keep or expire and why. Never removes what a kept backup needs (its
    objects, its parents, the WAL or AOF that rolls it forward); safe to kill and run again."""
    from hadr_backup.engines import EngineContext
    from hadr_backup.repo.prune import run_prune

    ctx = EngineContext(app.policy(), app.ui)
    if os.environ.get(NOW_ENV):
        from hadr_backup.timefmt import parse_target_time

        now = parse_target_time(os.environ[NOW_ENV]).timestamp()
        ctx = EngineContext(ctx.policy, ctx.ui, clock=lambda: now)
    app.ui.render(run_prune(ctx, source_name, dry_run))
