"""``hadr wal-push`` (archive_command) and ``hadr wal-fetch`` (restore_command).

Exit codes are PostgreSQL's contract: wal-push exits 0 only once the file is durably stored;
wal-fetch exits 0 when it fetched the file, 1 only when the repository confirmed that it does not
hold it, and 200 on any other failure (PostgreSQL treats > 125 as fatal and stops recovery).
"""

from __future__ import annotations

import sys

import click

from hadr_backup.errors import HadrError
from hadr_backup.postgres.archive import WalFetchFailed
from hadr_backup.postgres.walcommands import run_wal_fetch, run_wal_push


@click.command("wal-push")
@click.option("--source", "source", metavar="NAME", help="PostgreSQL source in the policy.")
@click.argument("path", metavar="PATH")
@click.pass_obj
def wal_push(app, source: str | None, path: str) -> None:
    """Store one WAL file (archive_command = 'hadr wal-push %p')."""
    result = run_wal_push(app.policy(), source, path)
    app.ui.render(result)


@click.command("wal-fetch")
@click.option("--source", "source", metavar="NAME", help="PostgreSQL source in the policy.")
@click.option(
    "--prefetch", default=8, show_default=True, metavar="N", help="Segments to fetch ahead in the background (0 = off)."
)
@click.argument("name", metavar="NAME")
@click.argument("dest", metavar="DEST")
@click.pass_context
def wal_fetch(ctx: click.Context, source: str | None, prefetch: int, name: str, dest: str) -> None:
    """Fetch one WAL file (restore_command = 'hadr wal-fetch %f %p')."""
    app = ctx.obj
    try:
        result = run_wal_fetch(app.policy(), source, name, dest, prefetch=prefetch)
    except WalFetchFailed:
        raise
    except Exception as error:  # a policy or program error must stop recovery, not end it
        message = str(error) if isinstance(error, HadrError) else f"{type(error).__name__}: {error}"
        raise WalFetchFailed(f"cannot fetch {name}: {message}") from error
    if result.found or app.ui.json_mode:  # --json: the answer, absent included, is on stdout
        app.ui.render(result)
    else:
        app.ui.info(f"hadr: {name} is not in the archive")
    if not result.found:
        sys.exit(1)  # not ctx.exit: click returns that code instead of raising when not standalone
