"""The PostgreSQL server a base backup is taken from: what it is, whether it can be backed up, and
what its archiver says when WAL does not arrive."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hadr_backup.errors import HadrError, ServerError, UsageError
from hadr_backup.policy.model import PostgresSource

MIN_VERSION = 130000


@dataclass
class ServerFacts:
    """What the backup records about the cluster, read before it starts."""

    version_num: int
    version: str
    system_identifier: str
    wal_segment_size: int
    data_checksums: bool
    archive_mode: str
    archive_command: str
    in_recovery: bool
    databases: list[str]
    tablespaces: list[tuple[str, str]]


_FACTS_SQL = """
select current_setting('server_version_num')::int, current_setting('server_version'),
       (select system_identifier::text from pg_control_system()),
       pg_size_bytes(current_setting('wal_segment_size')), current_setting('data_checksums') = 'on',
       current_setting('archive_mode'), current_setting('archive_command'), pg_is_in_recovery()
"""


# what PostgreSQL sends as text; INVALID_OID (0) is psycopg's loader for types it has none for
_TEXT_TYPES = ("text", "varchar", "bpchar", "name", '"char"', 0)


def connect(source: PostgresSource, dbname: str | None = None):
    import psycopg

    dsn = source.dsn_for(dbname) if dbname else source.dsn
    try:
        return open_connection(dsn)
    except psycopg.OperationalError as error:
        raise ServerError(
            f"cannot connect to PostgreSQL source {source.name} ({source.dsn}): {str(error).strip()}",
            hint="check sources.postgres[].dsn and that the server runs",
        ) from error


def open_connection(dsn: str, connect_timeout: int = 10):
    """An autocommit connection whose text values are always ``str``, whatever the server's encoding.

    The client encoding is UTF8, so the server converts from its own encoding. A SQL_ASCII cluster
    stores whatever bytes its clients sent and refuses to send bytes that are not UTF-8 as UTF8, so
    there the client encoding stays SQL_ASCII and the bytes are decoded here, with surrogateescape: a
    name stays exact (``name.encode("utf-8", "surrogateescape")`` gives its bytes back), and
    ``display_text`` shows it readably.
    """
    import psycopg

    conn = psycopg.connect(
        dsn, autocommit=True, connect_timeout=connect_timeout, application_name="hadr", client_encoding="UTF8"
    )
    try:
        if conn.info.parameter_status("server_encoding") == "SQL_ASCII":
            conn.execute("set client_encoding to 'SQL_ASCII'")
    except BaseException:
        conn.close()
        raise
    for text_type in _TEXT_TYPES:
        conn.adapters.register_loader(text_type, _exact_text_loader())
    return conn


def display_text(value: str) -> str:
    """``value`` for a terminal: bytes kept by surrogateescape shown as ``\\xe9``."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@functools.cache
def _exact_text_loader() -> type:
    from psycopg.adapt import Loader

    class ExactText(Loader):
        def load(self, data) -> str:
            return bytes(data).decode("utf-8", "surrogateescape")

    return ExactText


def inspect_server(source: PostgresSource) -> ServerFacts:
    with connect(source) as conn:
        row = conn.execute(_FACTS_SQL).fetchone()
        databases = [
            r[0]
            for r in conn.execute("select datname from pg_database where not datistemplate and datallowconn order by 1")
        ]
        tablespaces = [
            (r[0], r[1])
            for r in conn.execute(
                "select spcname, pg_tablespace_location(oid) from pg_tablespace "
                "where spcname not in ('pg_default', 'pg_global') order by 1"
            )
        ]
    return ServerFacts(row[0], row[1], row[2], int(row[3]), row[4], row[5], row[6], row[7], databases, tablespaces)


def databases_size(source: PostgresSource) -> int | None:
    """The size of the databases (what a base backup's tar roughly holds), for an ETA; None when unknown."""
    try:
        with connect(source) as conn:
            row = conn.execute(
                "select sum(pg_database_size(oid))::bigint from pg_database "
                "where has_database_privilege(oid, 'CONNECT')"
            ).fetchone()
    except Exception:  # an estimate only: the backup itself says what is wrong with the connection
        return None
    return int(row[0]) if row and row[0] else None


def check_backupable(source: PostgresSource, facts: ServerFacts) -> None:
    if facts.version_num < MIN_VERSION:
        raise UsageError(f"{source.name} runs PostgreSQL {facts.version}; hadr backs up 13 and later")
    if facts.tablespaces:
        listed = ", ".join(f"{name} ({location})" for name, location in facts.tablespaces)
        raise UsageError(
            f"{source.name} has tablespaces outside the data directory: {listed}; hadr backs up "
            f"only clusters without them and will not silently leave them out",
            hint="move their tables into pg_default (ALTER TABLE ... SET TABLESPACE pg_default) "
            "and drop the tablespaces, or back this cluster up with another tool",
        )
    if facts.in_recovery:
        raise UsageError(
            f"{source.name} is a standby; hadr takes base backups from the primary",
            hint="point sources.postgres[].dsn at the primary",
        )
    if facts.archive_mode == "off" or not facts.archive_command.strip() or facts.archive_command == "(disabled)":
        raise UsageError(
            f"{source.name} does not archive WAL (archive_mode={facts.archive_mode}, "
            f"archive_command={facts.archive_command!r}); a base backup is useless without it",
            hint="set archive_mode = on and archive_command = 'hadr wal-push %p', then restart",
        )


def check_archive_identity(repo, source: PostgresSource, facts: ServerFacts) -> None:
    from hadr_backup.postgres.archive import load_identity

    identity = load_identity(repo, source.name)
    if identity is not None and str(identity.system_identifier) != facts.system_identifier:
        raise UsageError(
            f"the repository's WAL archive for {source.name} belongs to cluster "
            f"{identity.system_identifier}, but {source.dsn} is cluster {facts.system_identifier}",
            hint="give this cluster its own source name in the policy",
        )


def archiver_state(source: PostgresSource) -> dict | None:
    try:
        with connect(source) as conn:
            row = conn.execute(
                "select last_failed_wal, last_failed_time, failed_count, last_archived_wal, "
                "last_archived_time from pg_stat_archiver"
            ).fetchone()
    except HadrError:
        return None
    return dict(
        zip(
            ("last_failed_wal", "last_failed_time", "failed_count", "last_archived_wal", "last_archived_time"),
            row,
            strict=True,
        )
    )


def archiver_hint(source: PostgresSource) -> str:
    state = archiver_state(source)
    if state is None:
        return "check archive_command and the PostgreSQL log"
    if state["last_failed_wal"]:
        return (
            f"the archiver last failed on {state['last_failed_wal']} at {state['last_failed_time']} "
            f"({state['failed_count']} failures; last archived {state['last_archived_wal']}): "
            f"check archive_command and the PostgreSQL log"
        )
    return f"the archiver reports no failure (last archived {state['last_archived_wal']}); is it keeping up?"
