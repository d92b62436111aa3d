"""hadr schedule run | list | crontab | exec | health."""

from __future__ import annotations

import time

import click

from hadr_backup.schedule.listing import DEFAULT_LOCK_DIR

PORT = click.IntRange(1, 65535)


@click.group()
def schedule() -> None:
    """Run the policy's schedules: a daemon, or cron lines."""


@schedule.command("run")
@click.option("--metrics-port", type=PORT, metavar="PORT", help="Serve Prometheus metrics on PORT (/metrics).")
@click.option("--metrics-address", default="0.0.0.0", show_default=True, help="Address the metrics listen on.")
@click.pass_obj
def schedule_run(app, metrics_port: int | None, metrics_address: str) -> None:
    """Run the schedules until SIGTERM (a container's main process): a log line per job start and end on
    stdout, JSON lines when stdout is not a terminal. On SIGTERM the running job is stopped cleanly."""
    from hadr_backup.schedule.daemon import run_daemon

    run_daemon(app.policy(), app.ui, metrics_port=metrics_port, metrics_address=metrics_address)


@schedule.command("list")
@click.pass_obj
def schedule_list(app) -> None:
    """Each schedule entry: its job, cron, next run and how its last run went."""
    from hadr_backup.schedule.listing import run_schedule_list

    app.ui.render(run_schedule_list(app.policy(), time.time()))


@schedule.command("crontab")
@click.option("--lock-dir", default=DEFAULT_LOCK_DIR, show_default=True, help="Where the flock files go.")
@click.pass_obj
def schedule_crontab(app, lock_dir: str) -> None:
    """Crontab lines for the schedules (`hadr schedule crontab | crontab -`), each behind flock -n."""
    from hadr_backup.schedule.listing import run_schedule_crontab

    app.ui.render(run_schedule_crontab(app.policy(), lock_dir))


@schedule.command("exec")
@click.argument("name")
@click.option(
    "--tick",
    metavar="T|schedule",
    help="The scheduled instant this run is for (RFC 3339), or `schedule`: the entry's newest one. A tick "
    "already run by another process is skipped. Default: none (a run by hand).",
)
@click.pass_context
def schedule_exec(ctx: click.Context, name: str, tick: str | None) -> None:
    """Run schedule entry NAME once now, as the daemon and cron lines do: under the job's lease (skipped
    when another process holds it), recorded in the job history."""
    from hadr_backup.schedule.execute import resolve_tick, run_schedule_exec, signals_noted

    policy = ctx.obj.policy()
    # a SIGTERM that comes once the run is recorded does not stop its result from being printed (the
    # daemon reads the run's outcome from it)
    with signals_noted():
        result = run_schedule_exec(policy, name, ctx.obj.ui, tick=resolve_tick(policy, name, tick))
        ctx.obj.ui.render(result)
    ctx.exit(result.exit_code)


@schedule.command("health")
@click.option("--metrics-port", type=PORT, default=9187, show_default=True, metavar="PORT")
@click.option("--max-age", type=click.FloatRange(min=1), default=120.0, show_default=True, metavar="SECONDS")
@click.pass_context
def schedule_health(ctx: click.Context, metrics_port: int, max_age: float) -> None:
    """Exit 0 when the daemon on this host serves metrics and its main loop ran within SECONDS."""
    from hadr_backup.schedule.health import run_health

    result = run_health(metrics_port, max_age)
    ctx.obj.ui.render(result)
    ctx.exit(result.exit_code)
