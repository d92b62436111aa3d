"""hadr restore pg (redis, s3 and all join this group)."""

from __future__ import annotations

from pathlib import Path

import click

from hadr_backup.objectstore import KIND as S3
from hadr_backup.postgres import KIND as PG
from hadr_backup.redis import KIND as REDIS


@click.group()
def restore() -> None:
    """Restore a source to a point in time."""


@restore.command(PG)
@click.option("--to", "to", required=True, type=click.Path(path_type=Path), help="Data directory to restore into.")
@click.option("--target-time", metavar="T", help="YYYY-MM-DD HH:MM:SS[.ffffff][Z|±HH:MM]; no offset = UTC.")
@click.option("--target-lsn", metavar="LSN", help="Stop at this WAL location, e.g. 0/3000028.")
@click.option("--target-xid", metavar="XID", help="Stop at the commit of this transaction.")
@click.option("--target-name", metavar="NAME", help="Stop at this restore point (pg_create_restore_point).")
@click.option("--latest", is_flag=True, help="Replay all archived WAL.")
@click.option("--backup", "backup_id", metavar="ID", help="Restore this backup (alone: stop as soon as consistent).")
@click.option("--exclusive", is_flag=True, help="Stop just before the target instead of just after it.")
@click.option("--target-timeline", type=int, metavar="N", help="Timeline to follow (default: the newest archived).")
@click.option(
    "--target-action",
    type=click.Choice(["pause", "promote", "shutdown"]),
    default="pause",
    show_default=True,
    help="What the server does when it reaches the target.",
)
@click.option("--port", type=int, help="Port of the restored server (default with --start: a free one).")
@click.option("--socket-dir", metavar="DIR", help="unix_socket_directories of the restored server ('' for none).")
@click.option("--start", is_flag=True, help="Start the server and wait until recovery ends.")
@click.option(
    "--force",
    is_flag=True,
    help="Restore into a non-empty --to: its contents are moved aside to <DIR>.hadr-old-<UTC stamp>.",
)
@click.option("--discard", is_flag=True, help="With --force: delete the old contents instead.")
@click.option("--verify", is_flag=True, help="Check the extracted files against the backup manifest.")
@click.option("--source", "source_name", metavar="NAME", help="Which sources.postgres entry (default: the only one).")
@click.pass_obj
def restore_pg(
    app,
    to: Path,
    target_time,
    target_lsn,
    target_xid,
    target_name,
    latest,
    backup_id,
    exclusive,
    target_timeline,
    target_action,
    port,
    socket_dir,
    start,
    force,
    discard,
    verify,
    source_name,
) -> None:
    """Restore a PostgreSQL base backup and replay archived WAL up to one target."""
    from hadr_backup.engines import EngineContext, engine
    from hadr_backup.postgres.restore import RestoreOptions
    from hadr_backup.postgres.targets import TIME, make_target
    from hadr_backup.timefmt import format_time

    target = make_target(
        time=target_time,
        lsn=target_lsn,
        xid=target_xid,
        name=target_name,
        latest=latest,
        backup_id=backup_id,
        exclusive=exclusive,
    )
    if target.kind == TIME:
        app.ui.info(f"target time resolves to {format_time(target.value)} (UTC)")
    options = RestoreOptions(
        to=to,
        target=target,
        source=source_name,
        timeline=target_timeline,
        backup_id=backup_id,
        action=target_action,
        port=port,
        start=start,
        force=force,
        discard=discard,
        socket_dir=socket_dir,
        verify=verify,
    )
    app.ui.render(engine(PG).restore(EngineContext(app.policy(), app.ui), options))


@restore.command(REDIS)
@click.option(
    "--to", "to", type=click.Path(path_type=Path), help="Directory to restore into (dump.rdb, or appendonlydir/)."
)
@click.option("--into", "into", metavar="URL", help="A running instance to put the state into (redis://…).")
@click.option(
    "--target-time", metavar="T", help="The AOF archive up to the second T, else the newest snapshot at or before T."
)
@click.option("--latest", is_flag=True, help="All of the AOF archive, else the newest snapshot.")
@click.option("--backup", "backup_id", metavar="ID", help="This snapshot.")
@click.option("--force", is_flag=True, help="Write into a non-empty --to, or replace every key of the --into instance.")
@click.option(
    "--scratch-bind",
    metavar="ADDR",
    default="127.0.0.1",
    show_default=True,
    help="With --into: the address the scratch redis-server listens on (one the target can reach).",
)
@click.option("--source", "source_name", metavar="NAME", help="Which sources.redis entry (default: the only one).")
@click.pass_obj
def restore_redis(app, to, into, target_time, latest, backup_id, force, scratch_bind, source_name) -> None:
    """Restore Redis to a directory or into a running instance (from the AOF archive or a snapshot), proven by a
    scratch redis-server."""
    from hadr_backup.engines import EngineContext, engine
    from hadr_backup.errors import UsageError
    from hadr_backup.redis.restore import RedisRestoreOptions

    if (to is None) == (into is None):
        raise UsageError("give one of --to DIR or --into URL", hint="a directory, or a running Redis instance")
    options = RedisRestoreOptions(
        to=to,
        into=into,
        source=source_name,
        backup_id=backup_id,
        latest=latest,
        target_time=target_time,
        force=force,
        scratch_bind=scratch_bind,
    )
    app.ui.render(engine(REDIS).restore(EngineContext(app.policy(), app.ui), options))


@restore.command(S3)
@click.option("--bucket", required=True, metavar="B", help="The bucket to restore (one of the source's buckets).")
@click.option(
    "--target-time", required=True, metavar="T", help="YYYY-MM-DD HH:MM:SS[.ffffff][Z|±HH:MM]; no offset = UTC."
)
@click.option("--to-bucket", metavar="B2", help="Write the bucket as it was at T here (created when missing).")
@click.option("--to-prefix", default="", metavar="P", help="With --to-bucket: under this prefix (a folder: P/).")
@click.option("--in-place", is_flag=True, help="Write T's versions as new current versions of B (needs versioning).")
@click.option("--dry-run", is_flag=True, help="Count what would be written and deleted; write nothing.")
@click.option("--from-mirror", is_flag=True, help="Take the state at T from the mirror's manifests (hadr backup s3).")
@click.option(
    "--force", is_flag=True, help="Restore into a non-empty --to-bucket/--to-prefix: overwrite, delete extras."
)
@click.option("--source", "source_name", metavar="NAME", help="Which sources.buckets entry (default: the only one).")
@click.pass_obj
@click.pass_context
def restore_s3(ctx, app, bucket, target_time, to_bucket, to_prefix, in_place, dry_run, from_mirror, force, source_name):
    """Restore a bucket to an instant, into another bucket or in place, and verify it."""
    from hadr_backup.engines import EngineContext, engine
    from hadr_backup.objectstore.restore import S3RestoreOptions
    from hadr_backup.timefmt import format_time, parse_target_time

    when = parse_target_time(target_time)
    app.ui.info(f"target time resolves to {format_time(when)} (UTC)")
    options = S3RestoreOptions(
        bucket=bucket,
        target_time=when,
        source=source_name,
        to_bucket=to_bucket,
        to_prefix=to_prefix,
        in_place=in_place,
        dry_run=dry_run,
        from_mirror=from_mirror,
        force=force,
    )
    result = engine(S3).restore(EngineContext(app.policy(), app.ui), options)
    app.ui.render(result)
    ctx.exit(result.exit_code)
