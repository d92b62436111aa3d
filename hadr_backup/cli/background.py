"""The background helpers of PostgreSQL archiving, as hidden ``hadr`` subcommands.

``hadr --policy P wal-pusher --source S --pg-wal DIR`` (started by async wal-push, see
postgres/spool.py) and ``hadr --policy P wal-prefetcher --source S --dir D --after NAME`` (started by
wal-fetch, see postgres/prefetch.py). Their stdout and stderr are their log files; a failure is logged
as one ``<UTC time> error: <message>`` line, which ``hadr info`` shows.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

import click

from hadr_backup.errors import EXIT_FAILURE, HadrError
from hadr_backup.fsutil import describe_os_error
from hadr_backup.postgres.background import log_error
from hadr_backup.postgres.prefetch import run_prefetcher
from hadr_backup.postgres.spool import run_pusher


@click.command("wal-pusher", hidden=True)
@click.option("--source", "source", required=True, metavar="NAME")
@click.option("--pg-wal", "pg_wal", required=True, metavar="DIR")
@click.pass_obj
def wal_pusher(app, source: str, pg_wal: str) -> None:
    """Store the ready WAL files of DIR (the async wal-push's background pusher)."""
    _logged(lambda: run_pusher(app.policy(), app.policy().sources.postgres_named(source), pg_wal))


@click.command("wal-prefetcher", hidden=True)
@click.option("--source", "source", required=True, metavar="NAME")
@click.option("--dir", "directory", required=True, metavar="DIR")
@click.option("--after", required=True, metavar="SEGMENT")
@click.option("--count", default=8, show_default=True, metavar="N")
@click.pass_obj
def wal_prefetcher(app, source: str, directory: str, after: str, count: int) -> None:
    """Fetch the COUNT segments after SEGMENT into DIR (wal-fetch's background prefetcher)."""
    _logged(lambda: run_prefetcher(app.policy(), app.policy().sources.postgres_named(source), directory, after, count))


def _logged(run: Callable[[], object]) -> None:
    """Run a helper; log any failure as an error line (nobody reads its exit code) and exit 1."""
    try:
        run()
    except HadrError as error:
        log_error(str(error))
        sys.exit(error.exit_code)
    except OSError as error:
        log_error(describe_os_error(error))
        sys.exit(EXIT_FAILURE)
    except Exception as error:  # a program error: the log is the only place anyone will see it
        log_error(f"{type(error).__name__}: {error}\n{traceback.format_exc().rstrip()}")
        sys.exit(EXIT_FAILURE)
