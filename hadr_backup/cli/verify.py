"""hadr verify repo | data."""

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
