"""hadr metrics [--output FILE]."""

from __future__ import annotations

import time

import click


@click.command()
@click.option(
    "--output",
    metavar="FILE",
    help="Write the metrics to FILE, replaced whole (node_exporter's textfile collector: *.prom).",
)
@click.pass_obj
def metrics(app, output: str | None) -> None:
    """Print the Prometheus metrics once: jobs, backups, restorable windows, archive lag, repository."""
    from hadr_backup.schedule.metrics import run_metrics

    app.ui.render(run_metrics(app.policy(), time.time(), output))
