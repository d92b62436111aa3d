"""hadr protect s3: versioning, the noncurrent-version lifecycle rule and object lock on a source's buckets."""

from __future__ import annotations

import click

from hadr_backup.objectstore import KIND as S3


@click.group()
def protect() -> None:
    """Make a source keep its history (S3: versioning, lifecycle, object lock)."""


@protect.command(S3)
@click.option("--source", "source_name", metavar="NAME", help="Which sources.buckets entry (default: the only one).")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.pass_obj
def protect_s3(app, source_name: str | None, dry_run: bool) -> None:
    """Turn versioning on, set the noncurrent-version expiry (noncurrent_days) beside the bucket's own
    lifecycle rules, and the default object-lock retention where the bucket has object lock.

    Idempotent: a second run changes nothing. Prints each change and the point-in-time window the
    bucket's rules leave."""
    from hadr_backup.objectstore.protect import run_protect_s3

    app.ui.render(run_protect_s3(app.policy(), source_name, dry_run=dry_run))
