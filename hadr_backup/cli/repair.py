"""hadr repair catalog."""

from __future__ import annotations

import click


@click.group()
def repair() -> None:
    """Repair the repository's bookkeeping from what it holds."""


@repair.command("catalog")
@click.pass_context
def repair_catalog(ctx: click.Context) -> None:
    """Rebuild the catalog from the backups' own descriptions (backup.json); keep what it still has.

    Exit 3 when backup folders cannot be accounted for (left untouched)."""
    from hadr_backup.repo.repair import run_repair_catalog

    result = run_repair_catalog(ctx.obj.policy())
    ctx.obj.ui.render(result)
    ctx.exit(result.exit_code)
