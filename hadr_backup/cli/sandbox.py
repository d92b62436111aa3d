"""hadr sandbox up | down | status | load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hadr_backup.sandbox import run
from hadr_backup.sandbox.layout import SANDBOX_DIR_HELP, sandbox_policy


def sandbox_options(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dir", "sandbox_dir", type=click.Path(file_okay=False, path_type=Path), help=SANDBOX_DIR_HELP
    )(command)


def prepare(ctx: click.Context, sandbox_dir: Path | None, *, write: bool = False) -> tuple[Any, Path]:
    return sandbox_policy(ctx.obj.sandbox_policy_path(sandbox_dir), sandbox_dir, write=write)


@click.group()
def sandbox() -> None:
    """Local PostgreSQL + two Redis + an S3 endpoint, seeded with bundler-like data."""


@sandbox.command()
@sandbox_options
@click.pass_context
def up(ctx: click.Context, sandbox_dir: Path | None) -> None:
    """Start every component (seeding on first start); they keep running after this exits. The first
    start writes the sandbox's policy.yaml; the last line printed exports HADR_POLICY=<it>."""
    policy, folder = prepare(ctx, sandbox_dir, write=True)
    ctx.obj.ui.render(run.run_sandbox_up(policy, folder, progress=ctx.obj.ui.info))


@sandbox.command()
@sandbox_options
@click.option("--purge", is_flag=True, help="Also delete the sandbox folder and all its data.")
@click.pass_context
def down(ctx: click.Context, sandbox_dir: Path | None, purge: bool) -> None:
    """Stop every component; the data stays for the next `up` unless --purge."""
    policy, folder = prepare(ctx, sandbox_dir)
    ctx.obj.ui.render(run.run_sandbox_down(policy, folder, purge=purge, progress=ctx.obj.ui.info))


@sandbox.command()
@sandbox_options
@click.pass_context
def status(ctx: click.Context, sandbox_dir: Path | None) -> None:
    """Each component: running or not, pid, port, counts; the data invariants. Exits 0 even when down."""
    policy, folder = prepare(ctx, sandbox_dir)
    ctx.obj.ui.render(run.run_sandbox_status(policy, folder))


@sandbox.command()
@sandbox_options
@click.option("--seconds", type=click.FloatRange(min=0), required=True, help="How long to run.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=20.0, show_default=True, help="Operations per second.")
@click.option("--seed", "seed_value", type=int, default=None, help="Random seed, for a repeatable run.")
@click.pass_context
def load(ctx: click.Context, sandbox_dir: Path | None, seconds: float, rate: float, seed_value: int | None) -> None:
    """Write like a bundler (payments, uploads, bundles, queue jobs); Ctrl-C stops cleanly. Exit 3 if an
    invariant is broken afterwards."""
    policy, folder = prepare(ctx, sandbox_dir)
    result = run.run_sandbox_load(policy, folder, seconds=seconds, rate=rate, seed_value=seed_value, ui=ctx.obj.ui)
    ctx.obj.ui.render(result)
    ctx.exit(result.exit_code)
