"""A SQL_ASCII cluster (``initdb -E SQL_ASCII``, still common on old installs) stores whatever bytes its
clients send, so names and text there are bytes in no declared encoding. Backup, list, info and a
point-in-time restore all work on it, and a database name that is not UTF-8 stays exact.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import psycopg
import pytest

from hadr_backup.repo.repository import open_repo
from tests.integration.pg_support import BIN, PgEnv, restored_port

pytestmark = pytest.mark.integration

NAME = b"caf\xe9"  # "café" as a LATIN1 client wrote it
DATABASE = NAME.decode("utf-8", "surrogateescape")  # how hadr holds it: exact, and printable as caf\xe9
DISHES = [b"cr\xe8me br\xfbl\xe9e", b"caf\xe9 au lait"]
LATER = b"g\xe2teau"  # committed after the backup: the restore replays it from the archive


@pytest.fixture(scope="module")
def env():
    env = PgEnv(cluster_options={"encoding": "SQL_ASCII", "locale": "C"})
    yield env
    env.close()


def psql(env: PgEnv, dbname: bytes, sql: bytes, port: int | None = None) -> bytes:
    """psql with raw bytes, as an old client of a SQL_ASCII cluster talks to it."""
    argv = [
        f"{BIN}/psql",
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        str(port or env.port),
        "-U",
        "postgres",
        "-d",
        dbname,
        "-c",
        sql,
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={**os.environ, "PGCLIENTENCODING": "SQL_ASCII"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def backed_up(env: PgEnv) -> dict:
    with psycopg.connect(env.dsn()) as conn:  # psycopg on its own hands over bytes here
        assert conn.execute("show server_encoding").fetchall() == [(b"SQL_ASCII",)]
    psql(env, b"postgres", b'create database "' + NAME + b'"')
    values = b", ".join(b"(%d, '%s')" % (n, dish) for n, dish in enumerate(DISHES, 1))
    psql(env, NAME, b"create table menu(id int primary key, dish text); insert into menu values " + values)
    done = env.hadr("backup", "pg")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^databases\s+caf\\xe9, postgres$", done.stdout, re.MULTILINE), done.stdout
    return done


def test_backup_lists_the_databases_exactly_in_valid_json(env: PgEnv, backed_up) -> None:
    listed = env.hadr("--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.isascii()  # a byte that is not UTF-8 is escaped, never written raw
    (backup,) = json.loads(listed.stdout)["backups"]
    assert backup["state"] == "complete"
    assert backup["meta"]["databases"] == [DATABASE, "postgres"]
    assert backup["meta"]["databases"][0].encode("utf-8", "surrogateescape") == NAME
    assert backup["meta"]["system_identifier"].isdigit() and backup["meta"]["pg_version"].startswith("15")
    with open_repo(env.policy) as repo:  # the catalog itself reads back the same
        assert repo.catalog.entries[0].meta["databases"] == [DATABASE, "postgres"]
    human = env.hadr("list")
    assert human.returncode == 0 and backup["id"] in human.stdout, human.stderr


def test_info_measures_the_archive_of_a_sql_ascii_cluster(env: PgEnv, backed_up) -> None:
    done = env.hadr("--json", "info")
    assert done.returncode == 0, done.stderr
    (source,) = json.loads(done.stdout)["sources"]
    archive = source["archive"]
    assert archive["cluster_error"] is None and source["complete_backups"] == 1
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", archive["cluster"]["current_lsn"])
    assert re.match(r"[0-9A-F]{24}", archive["cluster"]["last_archived_wal"])  # a str, not bytes
    assert archive["lag_segments"] is not None
    human = env.hadr("info")
    assert human.returncode == 0 and "restorable: timeline 1" in human.stdout, human.stdout + human.stderr


def test_restore_brings_the_bytes_back(env: PgEnv, backed_up) -> None:
    psql(env, NAME, b"insert into menu values (3, '" + LATER + b"')")
    env.switch_and_wait()
    to = env.new_restore_dir()
    done = env.hadr("--json", "restore", "pg", "--latest", "--to", str(to), "--start")
    assert done.returncode == 0, done.stdout + done.stderr
    restored = json.loads(done.stdout)
    assert restored["state"] == "paused" and re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", restored["reached_lsn"])
    rows = psql(env, NAME, b"select dish from menu order by id", port=restored_port(to))
    assert rows.splitlines() == [*DISHES, LATER]
