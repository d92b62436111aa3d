"""hadr check [--source N] [--timeout S]."""

from __future__ import annotations

import click

from hadr_backup.verify.check import run_check


@click.command()
@click.option("--source", "source_name", metavar="NAME", help="Check only this source (default: every source).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the WAL segment switched now may take to reach the repository.",
)
@click.pass_context
def check(ctx: click.Context, source_name: str | None, timeout: float) -> None:
    """Prove the archive path end to end, as pgbackrest check and barman check do.

    The repository (reachable, identity, key, writable), then per PostgreSQL source: the role, wal_level,
    archive_mode, archive_command (this hadr, this policy, this source), archive_timeout within the
    source's rpo, clock skew, the archive's cluster, and a forced WAL switch whose segment must reach the
    repository. One line per check; exit 3 when one fails.
    """
    report = run_check(ctx.obj.policy(), source_name, timeout=timeout, ui=ctx.obj.ui)
    ctx.obj.ui.render(report)
    ctx.exit(report.exit_code)
