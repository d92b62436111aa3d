"""hadr drill: the newest state of every PostgreSQL and Redis source restored into scratch, proven, RTO and
RPO measured, torn down (the `drill` schedule job runs the same)."""

from __future__ import annotations

import click


@click.command()
@click.pass_context
def drill(ctx: click.Context) -> None:
    """Restore the newest state of every PostgreSQL and Redis source into a scratch directory, prove it
    (PostgreSQL started and replayed to the end of the archive; Redis loaded by a scratch server), measure
    RTO and RPO, and remove it all. Exit 1 when a source fails (the others still run)."""
    from hadr_backup.engines import EngineContext
    from hadr_backup.schedule.drill import run_drill

    result = run_drill(EngineContext(ctx.obj.policy(), ctx.obj.ui))
    ctx.obj.ui.render(result)
    ctx.exit(result.exit_code)
