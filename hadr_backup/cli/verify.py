"""hadr verify repo | data."""

from __future__ import annotations

import click

from hadr_backup.verify.repo import run_verify_repo


@click.group()
def verify() -> None:
    """Verify the repository or restored data. Exit 3 when a problem is found."""


@verify.command("repo")
@click.option("--deep", is_flag=True, help="Read every object back: checksums and decryption.")
@click.pass_context
def verify_repo(ctx: click.Context, deep: bool) -> None:
    """Every object present, sizes and checksums right, decryptable; WAL continuity."""
    report = run_verify_repo(ctx.obj.policy(), deep=deep)
    ctx.obj.ui.render(report)
    ctx.exit(report.exit_code)
