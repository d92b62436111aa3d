"""hadr key create | rotate."""

from __future__ import annotations

import click

from hadr_backup.repo.keyring import run_key_create, run_key_rotate


@click.group()
def key() -> None:
    """Create and rotate encryption keys (the repository records key ids, never keys)."""


@key.command("create")
@click.option("--file", "path", metavar="PATH", help="Key file to create (default: encryption.key_file).")
@click.pass_obj
def key_create(app, path: str | None) -> None:
    """Create a new master key file (mode 0600); refuses to overwrite one."""
    app.ui.render(run_key_create(app.policy(), path))


@key.command("rotate")
@click.option("--new-key-file", required=True, metavar="PATH", help="The new master key (from `key create`).")
@click.pass_obj
def key_rotate(app, new_key_file: str) -> None:
    """Re-wrap the repository's data keys with a new master key; data is not rewritten."""
    app.ui.render(run_key_rotate(app.policy(), new_key_file))
