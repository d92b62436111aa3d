"""The ``hadr`` entry point.

Sub-commands are loaded lazily from ``COMMANDS`` so that ``hadr --help`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from hadr_backup import __version__
from hadr_backup.errors import EXIT_FAILURE, EXIT_USAGE, HadrError
from hadr_backup.fsutil import describe_os_error
from hadr_backup.ui import UI

# name -> ("module:attribute", one-line help shown by `hadr --help` without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("hadr_backup.cli.repo:init", "Create or check the repository."),
    "list": ("hadr_backup.cli.repo:list_", "List backups in the catalog."),
    "info": ("hadr_backup.cli.repo:info", "Repository summary and restorable window per source."),
    "verify": ("hadr_backup.cli.verify:verify", "Verify the repository or restored data."),
    "repair": ("hadr_backup.cli.repair:repair", "Rebuild the catalog from the backups' own descriptions."),
    "key": ("hadr_backup.cli.key:key", "Create and rotate encryption keys."),
    "sandbox": ("hadr_backup.cli.sandbox:sandbox", "Local PostgreSQL + Redis + S3 with bundler-like data."),
    "backup": ("hadr_backup.cli.backup:backup", "Take one backup now."),
    "wal-push": ("hadr_backup.cli.wal:wal_push", "PostgreSQL archive_command: store one WAL file."),
    "wal-fetch": ("hadr_backup.cli.wal:wal_fetch", "PostgreSQL restore_command: fetch one WAL file."),
    "restore": ("hadr_backup.cli.restore:restore", "Restore a source to a point in time."),
    "demo": ("hadr_backup.cli.demo:demo", "The whole story on the sandbox, narrated."),
}
# background helpers that hadr starts itself (postgres/background.py): not listed by `hadr --help`
HIDDEN_COMMANDS: dict[str, str] = {
    "wal-pusher": "hadr_backup.cli.background:wal_pusher",
    "wal-prefetcher": "hadr_backup.cli.background:wal_prefetcher",
}


@dataclass
class App:
    """What every command receives as ``ctx.obj``: global options, the UI and the policy."""

    policy_path: str | None  # --policy or HADR_POLICY; None: policy() looks for ./hadr.yaml, /etc/hadr/hadr.yaml
    ui: UI
    policy_from_env: bool = False  # the path came from HADR_POLICY, not from --policy
    _policy: Any = field(default=None, repr=False)

    def sandbox_policy_path(self, sandbox_dir) -> str | None:
        """For sandbox commands: ``--dir`` names the sandbox, whose own policy then wins over an
        exported HADR_POLICY (left from another sandbox); an explicit --policy is kept."""
        return None if sandbox_dir and self.policy_from_env else self.policy_path

    def policy(self):
        if self._policy is None:
            from hadr_backup.policy.load import load_policy

            self._policy = load_policy(self.policy_path)
        return self._policy


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS[name][0] if name in COMMANDS else HIDDEN_COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name != module_name:
                raise
            return None
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--policy", "policy_path", envvar="HADR_POLICY", metavar="FILE",
              help="Policy file (YAML). Default: $HADR_POLICY, else ./hadr.yaml, else /etc/hadr/hadr.yaml. "
                   "`hadr sandbox up` writes one for the sandbox and prints the line that exports it.")
@click.option("--json", "json_mode", is_flag=True, help="Machine output (JSON) on stdout.")
@click.option("-v", "--verbose", count=True, help="More output; tracebacks on errors.")
@click.option("-q", "--quiet", count=True, help="Less output.")
@click.version_option(__version__, prog_name="hadr")
@click.pass_context
def cli(ctx: click.Context, policy_path: str | None, json_mode: bool, verbose: int, quiet: int) -> None:
    """hadr: backup and point-in-time recovery for PostgreSQL, Redis and S3."""
    from_env = ctx.get_parameter_source("policy_path") == click.core.ParameterSource.ENVIRONMENT
    ctx.obj = App(policy_path=policy_path, ui=UI(json_mode=json_mode, verbosity=verbose - quiet),
                  policy_from_env=from_env)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map HadrError (and, as a last resort, any OSError) to one message and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    try:
        code = cli.main(args=args, prog_name="hadr", standalone_mode=False)
    except HadrError as error:
        _fail(str(error), error.exit_code, verbose)
    except click.exceptions.Abort:
        UI().error("aborted")
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE if isinstance(error, click.UsageError) else error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except BrokenPipeError:
        os._exit(1)
    except OSError as error:  # an OS fault no layer below put into words: still one line, never a traceback
        _fail(describe_os_error(error), EXIT_FAILURE, verbose)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, exit_code: int, verbose: bool) -> None:
    """Print the error (after the traceback of the exception being handled, with -v) and exit."""
    if verbose:
        import traceback

        traceback.print_exc()
    UI().error(message)
    sys.exit(exit_code)
