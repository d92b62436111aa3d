"""hadr demo."""

from __future__ import annotations

from pathlib import Path

import click

from hadr_backup.sandbox.layout import SANDBOX_DIR_HELP


@click.command()
@click.option("--dir", "sandbox_dir", type=click.Path(file_okay=False, path_type=Path), help=SANDBOX_DIR_HELP)
@click.option("--seconds", type=float, default=6.0, show_default=True, help="Workload before the accident.")
@click.option("--keep", is_flag=True, help="Leave the restored side cluster running.")
@click.option("--stop-sandbox", is_flag=True, help="Stop the sandbox at the end (its data stays).")
@click.pass_context
def demo(ctx: click.Context, sandbox_dir: Path | None, seconds: float, keep: bool, stop_sandbox: bool) -> None:
    """The whole story on the sandbox, narrated: backup, accident, point-in-time restore, RTO and RPO."""
    from hadr_backup.sandbox.demo import run_demo

    app = ctx.obj
    result = run_demo(
        app.sandbox_policy_path(sandbox_dir),
        sandbox_dir,
        seconds=seconds,
        keep=keep,
        stop_sandbox=stop_sandbox,
        progress=app.ui.info,
    )
    app.ui.render(result)
    ctx.exit(result.exit_code)
