"""hadr init | list | info."""

from __future__ import annotations

import time

import click

from hadr_backup.engines import KINDS
from hadr_backup.inventory import run_info, run_init, run_list


@click.command()
@click.option("--create-key", is_flag=True, help="Create the key file named by the policy if it does not exist.")
@click.pass_obj
def init(app, create_key: bool) -> None:
    """Create the repository, or check that an existing one opens with this policy."""
    app.ui.render(run_init(app.policy(), create_key=create_key))


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(list(KINDS)))
@click.pass_obj
def list_(app, kind: str | None) -> None:
    """List backups in the catalog (optionally of one KIND)."""
    app.ui.render(run_list(app.policy(), kind))


@click.command()
@click.pass_obj
def info(app) -> None:
    """Repository summary, restorable window and archive lag per source."""
    app.ui.render(run_info(app.policy(), time.time()))
