"""The ``hadr`` entry point.

Sub-commands are loaded lazily from ``COMMANDS`` so that ``hadr --help`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click

from hadr_backup import __version__, filelog
from hadr_backup.errors import EXIT_FAILURE, EXIT_USAGE, HadrError
from hadr_backup.fsutil import describe_os_error
from hadr_backup.ui import UI

# name -> ("module:attribute", one-line help shown by `hadr --help` without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("hadr_backup.cli.repo:init", "Create or check the repository."),
    "list": ("hadr_backup.cli.repo:list_", "List backups in the catalog."),
    "info": ("hadr_backup.cli.repo:info", "Repository summary and restorable window per source."),
    "verify": ("hadr_backup.cli.verify:verify", "Verify the repository or restored data."),
    "check": ("hadr_backup.cli.check:check", "Prove the archive path end to end: settings, repository, a WAL switch."),
    "repair": ("hadr_backup.cli.repair:repair", "Rebuild the catalog from the backups' own descriptions."),
    "key": ("hadr_backup.cli.key:key", "Create and rotate encryption keys."),
    "sandbox": ("hadr_backup.cli.sandbox:sandbox", "Local PostgreSQL + Redis + S3 with bundler-like data."),
    "backup": ("hadr_backup.cli.backup:backup", "Take one backup now."),
    "archive": ("hadr_backup.cli.archive:archive", "Archive a change stream continuously (Redis AOF)."),
    "protect": ("hadr_backup.cli.protect:protect", "Make S3 buckets keep their history: versioning, lifecycle."),
    "wal-push": ("hadr_backup.cli.wal:wal_push", "PostgreSQL archive_command: store one WAL file."),
    "wal-fetch": ("hadr_backup.cli.wal:wal_fetch", "PostgreSQL restore_command: fetch one WAL file."),
    "restore": ("hadr_backup.cli.restore:restore", "Restore a source to a point in time."),
    "prune": (
        "hadr_backup.cli.prune:prune",
        "Apply the retention policy: expire old backups, never what a kept one needs.",
    ),
    "drill": (
        "hadr_backup.cli.drill:drill",
        "Restore the newest state of every source into scratch, prove it, measure RTO and RPO.",
    ),
    "demo": ("hadr_backup.cli.demo:demo", "The whole story on the sandbox, narrated."),
    "schedule": ("hadr_backup.cli.schedule:schedule", "Run the schedules: a daemon with /metrics, or cron lines."),
    "metrics": ("hadr_backup.cli.metrics:metrics", "Print the Prometheus metrics once (textfile collector)."),
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


def _json_option(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(App).ui.json_mode = True


def _verbosity_option(step: int) -> Callable[[click.Context, click.Parameter, int], None]:
    def callback(ctx: click.Context, _param: click.Parameter, count: int) -> None:
        ctx.find_object(App).ui.verbosity += step * count

    return callback


def _shared_options() -> list[click.Option]:
    """The global options that every command also accepts after its name (``hadr list --json``)."""
    return [
        click.Option(
            ["--json", "_json"],
            is_flag=True,
            expose_value=False,
            callback=_json_option,
            help="Machine output (JSON) on stdout.",
        ),
        click.Option(
            ["-v", "--verbose", "_verbose"],
            count=True,
            expose_value=False,
            callback=_verbosity_option(+1),
            help="More output; tracebacks on errors.",
        ),
        click.Option(
            ["-q", "--quiet", "_quiet"],
            count=True,
            expose_value=False,
            callback=_verbosity_option(-1),
            help="Less output.",
        ),
    ]


def with_shared_options(command: click.Command) -> click.Command:
    """Give ``command`` and every command below it the shared options (once: commands are loaded again)."""
    if not any(param.name == "_json" for param in command.params):
        command.params.extend(_shared_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_shared_options(sub)
    return command


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
        return with_shared_options(getattr(module, attribute))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> NoReturn:
        """Run the CLI and exit; map HadrError (and, as a last resort, any OSError) to one message and an
        exit code, and log how it ended. ``hadr`` is this, and so is click's CliRunner.invoke(cli, ...)."""
        args = list(sys.argv[1:] if args is None else args)
        extra.pop("standalone_mode", None)
        ui = UI(argv=args)
        code = EXIT_FAILURE
        try:
            code = self._run(ui, args, prog_name, extra)
        except SystemExit as done:  # a command's own sys.exit
            code = done.code if isinstance(done.code, int) else EXIT_FAILURE if done.code else 0
        finally:
            ui.end(code)
        sys.exit(code)

    def _run(self, ui: UI, args: list[str], prog_name: str | None, extra: dict[str, Any]) -> int:
        try:
            code = super().main(args=args, prog_name=prog_name or self.name, standalone_mode=False, obj=ui, **extra)
        except HadrError as error:
            return _fail(ui, str(error), error.exit_code)
        except click.exceptions.Abort:
            ui.error("aborted")
            return 130
        except click.ClickException as error:
            error.show()
            return EXIT_USAGE if isinstance(error, click.UsageError) else error.exit_code
        except click.exceptions.Exit as done:
            return done.exit_code
        except BrokenPipeError:
            os._exit(1)
        except OSError as error:  # an OS fault no layer below put into words: still one line, never a traceback
            return _fail(ui, describe_os_error(error), EXIT_FAILURE)
        return code if isinstance(code, int) else 0


@click.group("hadr", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--policy",
    "policy_path",
    envvar="HADR_POLICY",
    metavar="FILE",
    help="Policy file (YAML). Default: $HADR_POLICY, else ./hadr.yaml, else /etc/hadr/hadr.yaml. "
    "`hadr sandbox up` writes one for the sandbox and prints the line that exports it.",
)
@click.option("--json", "json_mode", is_flag=True, help="Machine output (JSON) on stdout.")
@click.option("-v", "--verbose", count=True, help="More output; tracebacks on errors.")
@click.option("-q", "--quiet", count=True, help="Less output.")
@click.option(
    "--log-file",
    "log_file",
    envvar="HADR_LOG_FILE",
    metavar="PATH",
    help="Append what hadr says (timestamped) to PATH, e.g. for cron. Default: $HADR_LOG_FILE.",
)
@click.option(
    "--log-level",
    "log_level",
    envvar="HADR_LOG_LEVEL",
    type=click.Choice(filelog.LEVELS),
    default=filelog.DEFAULT_LEVEL,
    show_default=True,
    help="What goes into --log-file: error, warn, info (+ progress and results), debug (+ tracebacks).",
)
@click.version_option(__version__, prog_name="hadr")
@click.pass_context
def cli(
    ctx: click.Context,
    policy_path: str | None,
    json_mode: bool,
    verbose: int,
    quiet: int,
    log_file: str | None,
    log_level: str,
) -> None:
    """hadr: backup and point-in-time recovery for PostgreSQL, Redis and S3."""
    from_env = ctx.get_parameter_source("policy_path") == click.core.ParameterSource.ENVIRONMENT
    ui = ctx.obj if isinstance(ctx.obj, UI) else UI()  # main() makes it, to log how the command ends
    ui.json_mode, ui.verbosity = json_mode, verbose - quiet
    if log_file:
        ui.open_log(log_file, log_level)
    ctx.obj = App(policy_path=policy_path, ui=ui, policy_from_env=from_env)


def main(argv: list[str] | None = None) -> NoReturn:
    """The ``hadr`` entry point: run the CLI on ``argv`` (default: the command line) and exit."""
    cli.main(argv)


def _fail(ui: UI, message: str, exit_code: int) -> int:
    """Say what failed; the traceback of the exception being handled goes to stderr with -v and to the
    log file at debug."""
    import traceback

    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in ui.argv)
    ui.verbosity = max(ui.verbosity, 1 if verbose else 0)
    ui.error(message, details=traceback.format_exc())
    return exit_code
